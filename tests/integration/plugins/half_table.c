/* A plugin whose table lacks operations: it must be refused before any of
 * them is called. */
#include "ferry/adapter.h"

int ferry_adapter_abi(const int *offered, size_t n);
const ferry_adapter_v1 *ferry_adapter_table_v1(void);

static const char *const formats[] = {"raw", NULL};
static const ferry_adapter_v1 table = {.abi = 1, .name = "half", .formats = formats};

int ferry_adapter_abi(const int *offered, size_t n)
{
	return 1;
}

const ferry_adapter_v1 *ferry_adapter_table_v1(void)
{
	return &table;
}
