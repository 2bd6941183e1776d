/* A plugin that answers the handshake but exports no operation table. */
#include "ferry/adapter.h"

int ferry_adapter_abi(const int *offered, size_t n);

int ferry_adapter_abi(const int *offered, size_t n)
{
	return 1;
}
