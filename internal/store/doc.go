// Package store keeps the control plane's state: CA keys, join tokens, agents,
// registration entries, issued SVIDs and revocations.
//
// Store is the interface the server uses. Two implementations share one set of
// SQL statements and are run by the same test suite (storetest):
//
//   - SQLite (modernc.org/sqlite, pure Go, no cgo): the embedded default, one
//     file in the server's data directory, WAL mode.
//   - PostgreSQL (pgx/v5 through database/sql): for several stateless server
//     replicas sharing one database.
//
// The store never sees a private key in the clear: CA keys arrive already
// wrapped by package keywrap, under a key that lives outside the database.
// Join tokens are stored as SHA-256 hashes; the token itself is shown once.
//
// Every change that agents must learn about (entries, revocations, bundle,
// evictions) bumps a revision counter in the same transaction, so an agent that
// syncs "since revision N" never misses a change, whichever replica it talks to.
package store
