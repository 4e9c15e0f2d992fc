package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// sqlitePragmas are applied by the driver to every connection: WAL so readers
// never block the writer, a busy timeout instead of failing at once when the
// file is locked by another process, FULL sync (every commit reaches the
// disk before it returns: NORMAL survives a process crash but a power loss
// can undo a committed revocation), and foreign keys on.
const sqlitePragmas = "_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"

// OpenSQLite opens, creating it if absent, the SQLite database at path and
// brings its schema up to date. The file is created with mode 0600: it holds
// wrapped CA keys and token hashes, which are nobody else's business.
func OpenSQLite(path string) (Store, error) {
	if strings.ContainsRune(path, '?') {
		// The driver reads everything after ? as parameters.
		return nil, fmt.Errorf("store: sqlite: %s: path must not contain '?'", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("store: sqlite: %w", err)
		}
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	db, err := sql.Open("sqlite", path+"?"+sqlitePragmas)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and a single connection
	// queues concurrent callers in database/sql instead of failing them with
	// SQLITE_BUSY when a read transaction tries to become a write one.
	db.SetMaxOpenConns(1)
	s, err := newSQLStore(context.Background(), db, dialect{name: "sqlite", blob: "BLOB"})
	if err != nil {
		return nil, fmt.Errorf("%w (database %s)", err, path)
	}
	return s, nil
}
