/* Libraries loaded when they are first needed, not with the program.
 *
 * ferryd at rest maps only what it uses at rest: libcurl comes with the
 * first download, libsodium with the first encrypted image, and libyaml
 * only while a YAML file is read (it is unloaded again).  The caller names
 * the functions it calls; either all of them are found or none is used. */
#ifndef FERRY_LAZYLIB_H
#define FERRY_LAZYLIB_H

#include <stddef.h>

typedef struct ferry_lazy_sym {
	const char *name; /* as exported by the library */
	void **fn;        /* where its address goes: (void **)&table.fn */
} ferry_lazy_sym;

/* dlopen SONAME (RTLD_NOW | RTLD_LOCAL) and look up every symbol.  Returns
 * the handle, or NULL with a sentence in WHY naming the library and what
 * was missing; then every *fn is NULL and nothing stays loaded. */
void *ferry_lazy_open(const char *soname, const ferry_lazy_sym *syms, size_t n, char *why, size_t why_len);

#endif
