package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL or
// key=value string, as libpq accepts) and brings its schema up to date.
// Several servers may share the database; they migrate it one at a time.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from the DSN it quotes.
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	// Named by its parts, never by the DSN, which may hold the password.
	where := fmt.Sprintf("host=%s port=%d user=%s database=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database)
	db := stdlib.OpenDB(*cfg)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: postgres: connect to %s: %w", where, err)
	}
	s, err := newSQLStore(ctx, db, postgresDialect)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// postgresDialect is PostgreSQL's.
var postgresDialect = dialect{
	name:     "postgres",
	blob:     "BYTEA",
	numbered: true,
	// Transaction-scoped, so it is released on commit or rollback. The
	// key is arbitrary but fixed: "rampart" in ASCII, as an integer.
	lockMigrations: "SELECT pg_advisory_xact_lock(32195270009778804)",
	// Session-scoped: held while the connection lives. Keyed by the
	// schema, so deployments sharing a database in schemas of their
	// own each have one.
	holdAuditLog:    "SELECT pg_try_advisory_lock(hashtextextended('rampart-audit-log:' || current_schema(), 0))",
	releaseAuditLog: "SELECT pg_advisory_unlock(hashtextextended('rampart-audit-log:' || current_schema(), 0))",
	// Transaction-scoped, per schema and key.
	lockKey: "SELECT pg_advisory_xact_lock(hashtextextended('rampart-key:' || current_schema() || ':' || ?, 0))",
}
