/* YAML files (the operator's specs, ferryd's config) read as JSON values, so
 * that one set of strict field readers (jsonfield.h) checks both. */
#ifndef FERRY_YAML_H
#define FERRY_YAML_H

#include <jansson.h>

#include "ferry/err.h"

/* A YAML document as JSON: plain integers, true/false and null keep their
 * types, everything else is a string; duplicate keys are refused.  Errors
 * name the file and line.  When lines is not NULL it receives an object
 * mapping each mapping key's JSON path ("a.b[2].c") to its line number, for
 * messages about values that parse but do not make sense. */
ferry_err ferry_yaml_to_json(const char *path, json_t **out, json_t **lines, ferry_status *st) FERRY_WUR;

#endif
