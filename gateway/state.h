/* ferryd's state dir: made on the first start, and never mistaken for a new
 * one afterwards.
 *
 * The journal carries a random identity, and the state dir keeps a copy of
 * it in journal.id.  A journal that is missing or empty where journal.id
 * says one lived, or one whose identity is not the state dir's, stops
 * ferryd: taken for a new gateway, it would forget the last manifest
 * sequence it accepted (letting an old manifest in again), the versions it
 * installed and the commands it has seen.  Only a state dir that was never
 * used starts fresh.  `ferryd --reset-journal` is the way out, and says what
 * is lost. */
#ifndef FERRY_STATE_H
#define FERRY_STATE_H

#include <stdio.h>

#include "ferry/err.h"
#include "journal.h"

ferry_err ferry_state_open(const char *state_dir, ferry_journal **out, ferry_status *st) FERRY_WUR;
/* Put the journal aside (journal.db.reset-TIME, with its -wal and -shm) and
 * forget the identity, so that the next start is a fresh one; what the old
 * journal held, as far as it can be read, is written to `say`. */
ferry_err ferry_state_reset(const char *state_dir, FILE *say, ferry_status *st) FERRY_WUR;

#endif
