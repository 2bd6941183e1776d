/* The built-in `self` adapter: the gateway's own files. */
#ifndef FERRY_SELF_H
#define FERRY_SELF_H

#include "ferry/adapter.h"

const ferry_adapter_v2 *ferry_self_adapter(void);

#endif
