package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The response tables (playbooks, quarantines, incidents and their
// timelines, playbook runs) sit beside the Store interface: RespondStore
// is what package respond needs, and both backends implement it.

// Playbook is one version of a playbook's YAML source.
type Playbook struct {
	Name      string
	Version   int
	Source    string
	CreatedAt time.Time
	CreatedBy string
}

// Quarantine holds an identity (a SPIFFE ID or an "ID/*" pattern) away
// from every other service until an operator lifts it.
type Quarantine struct {
	ID         string
	Pattern    string
	Reason     string
	Incident   string
	CreatedAt  time.Time
	CreatedBy  string
	LiftedAt   time.Time // zero: in force
	LiftedBy   string
	LiftReason string
}

// Incident is an incident's record; Data is package respond's JSON of the
// rest (alerts, identities, scope report).
type Incident struct {
	ID        string
	Title     string
	Status    string
	Severity  string
	Owner     string
	OpenedAt  time.Time
	OpenedBy  string
	UpdatedAt time.Time
	Data      []byte
}

// IncidentEvent is one line of an incident's timeline.
type IncidentEvent struct {
	Incident string
	Seq      int64 // from 1, per incident
	Time     time.Time
	Kind     string
	Actor    string
	Text     string
	Data     []byte
}

// PlaybookRun is a run of a playbook; Data is package respond's JSON of its
// steps and their results.
type PlaybookRun struct {
	ID        string
	Playbook  string
	Version   int
	Incident  string
	State     string
	StartedAt time.Time
	UpdatedAt time.Time
	Data      []byte
	// Revision counts the run's writes: PutRun writes only over the
	// revision it was given (0: a new run), so two writers that read the
	// same run cannot both write it (the second gets ErrConflict).
	Revision int64
}

// RespondStore keeps playbooks, quarantines, incidents and runs.
type RespondStore interface {
	// PutPlaybook stores a new version of a playbook (the next number)
	// and returns it.
	PutPlaybook(ctx context.Context, p Playbook) (Playbook, error)
	// GetPlaybook returns a version (0: the latest); ErrNotFound.
	GetPlaybook(ctx context.Context, name string, version int) (Playbook, error)
	// ListPlaybooks returns the latest version of each playbook.
	ListPlaybooks(ctx context.Context) ([]Playbook, error)
	DeletePlaybook(ctx context.Context, name string) error

	// AddQuarantine records q and bumps the revision, so every proxy
	// and SDK service learns of it at once.
	AddQuarantine(ctx context.Context, q Quarantine) error
	// LiftQuarantine lifts the quarantines in force of pattern and bumps
	// the revision; ErrNotFound if none is in force.
	LiftQuarantine(ctx context.Context, pattern, by, reason string, at time.Time) ([]Quarantine, error)
	// ListQuarantines returns the quarantines in force (all: lifted too).
	ListQuarantines(ctx context.Context, all bool) ([]Quarantine, error)

	CreateIncident(ctx context.Context, in Incident) error
	// UpdateIncident replaces the incident's fields; ErrNotFound.
	UpdateIncident(ctx context.Context, in Incident) error
	GetIncident(ctx context.Context, id string) (Incident, error)
	ListIncidents(ctx context.Context, status string) ([]Incident, error)
	// AppendIncidentEvent adds e at the end of the incident's timeline
	// and returns its sequence number.
	AppendIncidentEvent(ctx context.Context, e IncidentEvent) (int64, error)
	IncidentEvents(ctx context.Context, incident string) ([]IncidentEvent, error)

	// PutRun writes r if the stored run is still at r.Revision (0: there
	// is none yet) and returns the new revision; ErrConflict if another
	// write came first.
	PutRun(ctx context.Context, r PlaybookRun) (int64, error)
	GetRun(ctx context.Context, id string) (PlaybookRun, error)
	// ListRuns returns the runs of an incident ("" : all), oldest first.
	ListRuns(ctx context.Context, incident string) ([]PlaybookRun, error)
}

var _ RespondStore = (*sqlStore)(nil)

// Respond returns the response tables of a store, if it has them.
func Respond(s Store) (RespondStore, bool) {
	rs, ok := s.(RespondStore)
	return rs, ok
}

func (d dialect) respondMigration() []string {
	return []string{
		`CREATE TABLE respond_playbooks (
			name       TEXT NOT NULL,
			version    INTEGER NOT NULL,
			source     TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			created_by TEXT NOT NULL,
			deleted    INTEGER NOT NULL DEFAULT 0,
			PRIMARY KEY (name, version)
		)`,
		`CREATE TABLE respond_quarantines (
			id          TEXT PRIMARY KEY,
			pattern     TEXT NOT NULL,
			reason      TEXT NOT NULL,
			incident    TEXT NOT NULL,
			created_at  BIGINT NOT NULL,
			created_by  TEXT NOT NULL,
			lifted_at   BIGINT NOT NULL,
			lifted_by   TEXT NOT NULL,
			lift_reason TEXT NOT NULL
		)`,
		`CREATE INDEX respond_quarantines_active ON respond_quarantines (lifted_at, pattern)`,
		`CREATE TABLE respond_incidents (
			id         TEXT PRIMARY KEY,
			title      TEXT NOT NULL,
			status     TEXT NOT NULL,
			severity   TEXT NOT NULL,
			owner      TEXT NOT NULL,
			opened_at  BIGINT NOT NULL,
			opened_by  TEXT NOT NULL,
			updated_at BIGINT NOT NULL,
			data       ` + d.blob + ` NOT NULL
		)`,
		`CREATE TABLE respond_events (
			incident TEXT NOT NULL,
			seq      BIGINT NOT NULL,
			at       BIGINT NOT NULL,
			kind     TEXT NOT NULL,
			actor    TEXT NOT NULL,
			text     TEXT NOT NULL,
			data     ` + d.blob + ` NOT NULL,
			PRIMARY KEY (incident, seq)
		)`,
		`CREATE TABLE respond_runs (
			id         TEXT PRIMARY KEY,
			playbook   TEXT NOT NULL,
			version    INTEGER NOT NULL,
			incident   TEXT NOT NULL,
			state      TEXT NOT NULL,
			started_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL,
			data       ` + d.blob + ` NOT NULL
		)`,
	}
}

func (s *sqlStore) PutPlaybook(ctx context.Context, p Playbook) (Playbook, error) {
	if err := checkTimes(p.CreatedAt); err != nil {
		return p, err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(version), 0) FROM respond_playbooks WHERE name = ?`), p.Name).Scan(&v); err != nil {
			return err
		}
		p.Version = v + 1
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO respond_playbooks (name, version, source, created_at, created_by) VALUES (?, ?, ?, ?, ?)`),
			p.Name, p.Version, p.Source, ns(p.CreatedAt), p.CreatedBy)
		return err
	})
	if err != nil {
		return p, fmt.Errorf("store: put playbook %s: %w", p.Name, err)
	}
	return p, nil
}

func (s *sqlStore) GetPlaybook(ctx context.Context, name string, version int) (Playbook, error) {
	q := `SELECT name, version, source, created_at, created_by FROM respond_playbooks WHERE name = ? AND deleted = 0 ORDER BY version DESC LIMIT 1`
	args := []any{name}
	if version > 0 {
		q = `SELECT name, version, source, created_at, created_by FROM respond_playbooks WHERE name = ? AND version = ?`
		args = append(args, version)
	}
	var p Playbook
	var at int64
	err := s.db.QueryRowContext(ctx, s.q(q), args...).Scan(&p.Name, &p.Version, &p.Source, &at, &p.CreatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%w: playbook %s", ErrNotFound, name)
	}
	if err != nil {
		return p, fmt.Errorf("store: get playbook %s: %w", name, err)
	}
	p.CreatedAt = fromNS(at)
	return p, nil
}

func (s *sqlStore) ListPlaybooks(ctx context.Context) ([]Playbook, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT p.name, p.version, p.source, p.created_at, p.created_by FROM respond_playbooks p
		WHERE p.deleted = 0 AND p.version = (SELECT MAX(version) FROM respond_playbooks WHERE name = p.name) ORDER BY p.name`)
	if err != nil {
		return nil, fmt.Errorf("store: list playbooks: %w", err)
	}
	defer rows.Close()
	var out []Playbook
	for rows.Next() {
		var p Playbook
		var at int64
		if err := rows.Scan(&p.Name, &p.Version, &p.Source, &at, &p.CreatedBy); err != nil {
			return nil, fmt.Errorf("store: list playbooks: %w", err)
		}
		p.CreatedAt = fromNS(at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// DeletePlaybook hides every version (kept for the runs that name them).
func (s *sqlStore) DeletePlaybook(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE respond_playbooks SET deleted = 1 WHERE name = ? AND deleted = 0`), name)
	if err != nil {
		return fmt.Errorf("store: delete playbook %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: playbook %s", ErrNotFound, name)
	}
	return nil
}

func (s *sqlStore) AddQuarantine(ctx context.Context, q Quarantine) error {
	if err := checkTimes(q.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO respond_quarantines (id, pattern, reason, incident, created_at, created_by, lifted_at, lifted_by, lift_reason)
			VALUES (?, ?, ?, ?, ?, ?, 0, '', '')`), q.ID, q.Pattern, q.Reason, q.Incident, ns(q.CreatedAt), q.CreatedBy); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: add quarantine %s: %w", q.Pattern, err)
	}
	return nil
}

func (s *sqlStore) LiftQuarantine(ctx context.Context, pattern, by, reason string, at time.Time) ([]Quarantine, error) {
	if err := checkTimes(at); err != nil {
		return nil, err
	}
	var lifted []Quarantine
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		qs, err := s.listQuarantines(ctx, tx, false)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Pattern != pattern {
				continue
			}
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE respond_quarantines SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE id = ?`),
				ns(at), by, reason, q.ID); err != nil {
				return err
			}
			q.LiftedAt, q.LiftedBy, q.LiftReason = at, by, reason
			lifted = append(lifted, q)
		}
		if len(lifted) == 0 {
			return fmt.Errorf("%w: no quarantine of %s in force", ErrNotFound, pattern)
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("store: lift quarantine: %w", err)
	}
	return lifted, nil
}

func (s *sqlStore) ListQuarantines(ctx context.Context, all bool) ([]Quarantine, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store: list quarantines: %w", err)
	}
	defer tx.Rollback()
	return s.listQuarantines(ctx, tx, all)
}

func (s *sqlStore) listQuarantines(ctx context.Context, tx *sql.Tx, all bool) ([]Quarantine, error) {
	q := `SELECT id, pattern, reason, incident, created_at, created_by, lifted_at, lifted_by, lift_reason FROM respond_quarantines`
	if !all {
		q += ` WHERE lifted_at = 0`
	}
	rows, err := tx.QueryContext(ctx, q+` ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list quarantines: %w", err)
	}
	defer rows.Close()
	var out []Quarantine
	for rows.Next() {
		var x Quarantine
		var c, l int64
		if err := rows.Scan(&x.ID, &x.Pattern, &x.Reason, &x.Incident, &c, &x.CreatedBy, &l, &x.LiftedBy, &x.LiftReason); err != nil {
			return nil, fmt.Errorf("store: list quarantines: %w", err)
		}
		x.CreatedAt, x.LiftedAt = fromNS(c), fromNS(l)
		out = append(out, x)
	}
	return out, rows.Err()
}

func (s *sqlStore) CreateIncident(ctx context.Context, in Incident) error {
	if err := checkTimes(in.OpenedAt, in.UpdatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO respond_incidents (id, title, status, severity, owner, opened_at, opened_by, updated_at, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, in.ID, in.Title, in.Status, in.Severity, in.Owner, ns(in.OpenedAt), in.OpenedBy, ns(in.UpdatedAt), nonNilBytes(in.Data))
	})
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("%w: incident %s", ErrConflict, in.ID)
	}
	if err != nil {
		return fmt.Errorf("store: create incident: %w", err)
	}
	return nil
}

func (s *sqlStore) UpdateIncident(ctx context.Context, in Incident) error {
	if err := checkTimes(in.UpdatedAt); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE respond_incidents SET title = ?, status = ?, severity = ?, owner = ?, updated_at = ?, data = ? WHERE id = ?`),
		in.Title, in.Status, in.Severity, in.Owner, ns(in.UpdatedAt), nonNilBytes(in.Data), in.ID)
	if err != nil {
		return fmt.Errorf("store: update incident: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: incident %s", ErrNotFound, in.ID)
	}
	return nil
}

const incidentCols = `id, title, status, severity, owner, opened_at, opened_by, updated_at, data`

func scanIncident(sc interface{ Scan(...any) error }) (Incident, error) {
	var in Incident
	var o, u int64
	err := sc.Scan(&in.ID, &in.Title, &in.Status, &in.Severity, &in.Owner, &o, &in.OpenedBy, &u, &in.Data)
	in.OpenedAt, in.UpdatedAt = fromNS(o), fromNS(u)
	return in, err
}

func (s *sqlStore) GetIncident(ctx context.Context, id string) (Incident, error) {
	in, err := scanIncident(s.db.QueryRowContext(ctx, s.q(`SELECT `+incidentCols+` FROM respond_incidents WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("%w: incident %s", ErrNotFound, id)
	}
	if err != nil {
		return in, fmt.Errorf("store: get incident: %w", err)
	}
	return in, nil
}

func (s *sqlStore) ListIncidents(ctx context.Context, status string) ([]Incident, error) {
	q, args := `SELECT `+incidentCols+` FROM respond_incidents`, []any{}
	if status != "" {
		q += ` WHERE status = ?`
		args = append(args, status)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+` ORDER BY opened_at DESC, id`), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list incidents: %w", err)
	}
	defer rows.Close()
	var out []Incident
	for rows.Next() {
		in, err := scanIncident(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list incidents: %w", err)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

func (s *sqlStore) AppendIncidentEvent(ctx context.Context, e IncidentEvent) (int64, error) {
	if err := checkTimes(e.Time); err != nil {
		return 0, err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(seq), 0) + 1 FROM respond_events WHERE incident = ?`), e.Incident).Scan(&e.Seq); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO respond_events (incident, seq, at, kind, actor, text, data) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			e.Incident, e.Seq, ns(e.Time), e.Kind, e.Actor, e.Text, nonNilBytes(e.Data))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: append incident event: %w", err)
	}
	return e.Seq, nil
}

func (s *sqlStore) IncidentEvents(ctx context.Context, incident string) ([]IncidentEvent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT incident, seq, at, kind, actor, text, data FROM respond_events WHERE incident = ? ORDER BY seq`), incident)
	if err != nil {
		return nil, fmt.Errorf("store: incident events: %w", err)
	}
	defer rows.Close()
	var out []IncidentEvent
	for rows.Next() {
		var e IncidentEvent
		var at int64
		if err := rows.Scan(&e.Incident, &e.Seq, &at, &e.Kind, &e.Actor, &e.Text, &e.Data); err != nil {
			return nil, fmt.Errorf("store: incident events: %w", err)
		}
		e.Time = fromNS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// PutRun inserts a run (r.Revision 0) or replaces the one at r.Revision,
// in one conditional statement: compare and swap.
func (s *sqlStore) PutRun(ctx context.Context, r PlaybookRun) (int64, error) {
	if err := checkTimes(r.StartedAt, r.UpdatedAt); err != nil {
		return 0, err
	}
	var (
		res sql.Result
		err error
	)
	if r.Revision == 0 {
		res, err = s.db.ExecContext(ctx, s.q(`INSERT INTO respond_runs (id, playbook, version, incident, state, started_at, updated_at, data, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
			ON CONFLICT (id) DO NOTHING`),
			r.ID, r.Playbook, r.Version, r.Incident, r.State, ns(r.StartedAt), ns(r.UpdatedAt), nonNilBytes(r.Data))
	} else {
		res, err = s.db.ExecContext(ctx, s.q(`UPDATE respond_runs SET incident = ?, state = ?, updated_at = ?, data = ?, revision = revision + 1
			WHERE id = ? AND revision = ?`),
			r.Incident, r.State, ns(r.UpdatedAt), nonNilBytes(r.Data), r.ID, r.Revision)
	}
	if err != nil {
		return 0, fmt.Errorf("store: put run: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("store: put run: %w", err)
	} else if n == 0 {
		return 0, fmt.Errorf("%w: run %s changed since it was read (revision %d)", ErrConflict, r.ID, r.Revision)
	}
	return r.Revision + 1, nil
}

const runCols = `id, playbook, version, incident, state, started_at, updated_at, data, revision`

func scanRun(sc interface{ Scan(...any) error }) (PlaybookRun, error) {
	var r PlaybookRun
	var st, up int64
	err := sc.Scan(&r.ID, &r.Playbook, &r.Version, &r.Incident, &r.State, &st, &up, &r.Data, &r.Revision)
	r.StartedAt, r.UpdatedAt = fromNS(st), fromNS(up)
	return r, err
}

func (s *sqlStore) GetRun(ctx context.Context, id string) (PlaybookRun, error) {
	r, err := scanRun(s.db.QueryRowContext(ctx, s.q(`SELECT `+runCols+` FROM respond_runs WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("%w: run %s", ErrNotFound, id)
	}
	if err != nil {
		return r, fmt.Errorf("store: get run: %w", err)
	}
	return r, nil
}

func (s *sqlStore) ListRuns(ctx context.Context, incident string) ([]PlaybookRun, error) {
	q, args := `SELECT `+runCols+` FROM respond_runs`, []any{}
	if incident != "" {
		q += ` WHERE incident = ?`
		args = append(args, incident)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+` ORDER BY started_at, id`), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list runs: %w", err)
	}
	defer rows.Close()
	var out []PlaybookRun
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
