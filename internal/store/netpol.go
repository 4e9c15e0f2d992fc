package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Placements (package netpol): which services an agent's host runs and the
// TCP ports their processes listen on. Like the scan tables they sit
// beside the Store interface: NetpolStore is what the server's netpol
// handlers need, and both backends implement it.

// Placement is one service on one agent's host.
type Placement struct {
	Agent      string // the reporting agent's SPIFFE ID
	Host       string // the address the server saw the agent at
	Service    string // SPIFFE ID
	Ports      []uint16
	ReportedAt time.Time
}

// NetpolStore keeps placements.
type NetpolStore interface {
	// ReplacePlacements replaces every placement of agent with ps, in one
	// transaction: an agent's report is the whole truth about its host.
	ReplacePlacements(ctx context.Context, agent string, ps []Placement) error
	// ListPlacements lists the placements reported at or after since.
	ListPlacements(ctx context.Context, since time.Time) ([]Placement, error)
}

var _ NetpolStore = (*sqlStore)(nil)

// Netpol returns the placement table of a store, if it has one.
func Netpol(s Store) (NetpolStore, bool) {
	ns, ok := s.(NetpolStore)
	return ns, ok
}

func (d dialect) netpolMigration() []string {
	return []string{
		`CREATE TABLE netpol_placements (
			agent       TEXT NOT NULL,
			host        TEXT NOT NULL,
			service     TEXT NOT NULL,
			ports       TEXT NOT NULL,
			reported_at BIGINT NOT NULL,
			PRIMARY KEY (agent, service)
		)`,
	}
}

func (s *sqlStore) ReplacePlacements(ctx context.Context, agent string, ps []Placement) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM netpol_placements WHERE agent = ?`), agent); err != nil {
			return err
		}
		for _, p := range ps {
			if err := checkTimes(p.ReportedAt); err != nil {
				return err
			}
			ports := make([]string, len(p.Ports))
			for i, n := range p.Ports {
				ports[i] = strconv.Itoa(int(n))
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO netpol_placements (agent, host, service, ports, reported_at) VALUES (?, ?, ?, ?, ?)`),
				agent, p.Host, p.Service, strings.Join(ports, ","), ns(p.ReportedAt)); err != nil {
				return fmt.Errorf("%s: %w", p.Service, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: replace placements of %s: %w", agent, err)
	}
	return nil
}

func (s *sqlStore) ListPlacements(ctx context.Context, since time.Time) ([]Placement, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT agent, host, service, ports, reported_at FROM netpol_placements WHERE reported_at >= ? ORDER BY service, host`), ns(since))
	if err != nil {
		return nil, fmt.Errorf("store: list placements: %w", err)
	}
	defer rows.Close()
	var out []Placement
	for rows.Next() {
		var p Placement
		var ports string
		var at int64
		if err := rows.Scan(&p.Agent, &p.Host, &p.Service, &ports, &at); err != nil {
			return nil, fmt.Errorf("store: list placements: %w", err)
		}
		p.ReportedAt = fromNS(at)
		for _, f := range strings.Split(ports, ",") {
			if f == "" {
				continue
			}
			n, err := strconv.ParseUint(f, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("store: placement %s of %s: port %q: %w", p.Service, p.Agent, f, err)
			}
			p.Ports = append(p.Ports, uint16(n))
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
