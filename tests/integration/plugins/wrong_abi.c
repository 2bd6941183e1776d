/* A plugin built for an ABI this ferryd does not offer: it must be refused. */
#include "ferry/adapter.h"

int ferry_adapter_abi(const int *offered, size_t n);
const ferry_adapter_v1 *ferry_adapter_table_v1(void);

int ferry_adapter_abi(const int *offered, size_t n)
{
	return 3;
}

const ferry_adapter_v1 *ferry_adapter_table_v1(void)
{
	return NULL;
}
