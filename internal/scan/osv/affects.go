package osv

import (
	"slices"
)

// Affects reports whether version v of a's package is affected. eco is the
// ecosystem v comes from (a's, normally). It returns ErrUnordered, with
// false, when a range could not be evaluated and no other part of a said
// the version is affected.
func (a *Affected) Affects(v string) (bool, error) {
	if slices.Contains(a.Versions, v) {
		return true, nil
	}
	var unordered bool
	for _, rg := range a.Ranges {
		if rg.Type == "GIT" {
			continue // commits: nothing a binary or package database tells
		}
		cmp := comparator(a.Package.Ecosystem, rg.Type)
		if cmp == nil {
			unordered = true
			continue
		}
		if _, err := cmp(v, v); err != nil {
			return false, err
		}
		hit, err := inRange(rg.Events, v, cmp)
		if err != nil {
			return false, err
		}
		if hit {
			return true, nil
		}
	}
	if unordered {
		return false, ErrUnordered
	}
	return false, nil
}

// inRange evaluates one range as the OSV schema's evaluation section does:
// the events sorted by version ("introduced: 0" first), the version is
// affected after an introduced at or below it, and not after a fixed or
// limit at or below it or a last_affected below it.
func inRange(events []Event, v string, cmp compareFunc) (bool, error) {
	type ev struct {
		Event
		ver string
	}
	evs := make([]ev, 0, len(events))
	for _, e := range events {
		evs = append(evs, ev{e, e.Introduced + e.Fixed + e.LastAffected + e.Limit})
	}
	var sortErr error
	slices.SortStableFunc(evs, func(x, y ev) int {
		if x.ver == y.ver {
			return 0
		}
		if x.Introduced == "0" {
			return -1
		}
		if y.Introduced == "0" {
			return 1
		}
		c, err := cmp(x.ver, y.ver)
		if err != nil && sortErr == nil {
			sortErr = err
		}
		return c
	})
	if sortErr != nil {
		return false, sortErr
	}
	affected := false
	for _, e := range evs {
		if e.Introduced == "0" {
			affected = true
			continue
		}
		c, err := cmp(v, e.ver)
		if err != nil {
			return false, err
		}
		switch {
		case e.Introduced != "":
			if c >= 0 {
				affected = true
			}
		case e.Fixed != "", e.Limit != "":
			if c >= 0 {
				affected = false
			}
		case e.LastAffected != "":
			if c > 0 {
				affected = false
			}
		}
	}
	return affected, nil
}

// FixedVersions returns the fixed versions named in a's ranges that are
// above v (the versions to upgrade to), in order.
func (a *Affected) FixedVersions(v string) []string {
	var out []string
	for _, rg := range a.Ranges {
		cmp := comparator(a.Package.Ecosystem, rg.Type)
		if cmp == nil {
			continue
		}
		for _, e := range rg.Events {
			if e.Fixed == "" {
				continue
			}
			if c, err := cmp(e.Fixed, v); err == nil && c > 0 && !slices.Contains(out, e.Fixed) {
				out = append(out, e.Fixed)
			}
		}
	}
	if cmp := comparator(a.Package.Ecosystem, "ECOSYSTEM"); cmp != nil {
		slices.SortFunc(out, func(x, y string) int { c, _ := cmp(x, y); return c })
	}
	return out
}
