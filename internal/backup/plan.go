package backup

import (
	"time"

	"filippo.io/age"
)

// Plan is a server's backups: where, encrypted to whom, how often, what is
// kept, and the drills.
type Plan struct {
	Destinations   []Destination
	Recipients     []age.Recipient
	RecipientNames []string
	Passphrase     func() ([]byte, error)
	IncludeKEK     bool
	PartSize       int
	Every          time.Duration
	Retention      Retention
	// Drills need what decrypts (an identity among the recipients kept on
	// this machine, or the passphrase); without it, none are scheduled.
	DrillEvery      time.Duration
	DrillMaxAge     time.Duration
	DrillIdentities []age.Identity
	DrillPassphrase func() ([]byte, error)
	// DrillPostgresDSN is where a drill of a PostgreSQL store makes its
	// scratch schema (default: the store's own database).
	DrillPostgresDSN string
}
