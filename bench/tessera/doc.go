// Package tessera measures transparency-dev/tessera's POSIX log next to
// Rampart's audit log, side by side on the same machine with the same
// entries and the same number of concurrent writers each waiting for its
// entry to be durable, for the choice recorded in docs/decisions/0014. It
// is a module of its own so that Tessera stays out of Rampart's build; run
// it with bench/tessera.sh.
package tessera
