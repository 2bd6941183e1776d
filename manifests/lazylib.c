/* Loading a library on first use (ferry/lazylib.h). */
#include "ferry/lazylib.h"

#include <dlfcn.h>
#include <stdio.h>

void *ferry_lazy_open(const char *soname, const ferry_lazy_sym *syms, size_t n, char *why, size_t why_len)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		snprintf(why, why_len, "%s cannot be loaded: %s", soname, dlerror());
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if (!(*syms[i].fn = dlsym(h, syms[i].name))) {
			snprintf(why, why_len, "%s lacks %s, which ferry uses", soname, syms[i].name);
			for (size_t k = 0; k < n; k++)
				*syms[k].fn = NULL;
			dlclose(h);
			return NULL;
		}
	return h;
}
