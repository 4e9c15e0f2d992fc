package rekey

import (
	"fmt"
	"strings"
	"time"
)

// Markdown renders the state as a report for people: what was rotated
// (old and new key IDs), the counts, and what is left to do.
func (st *State) Markdown() string {
	var b strings.Builder
	title := "Burn-down " + st.ID
	if st.Phase == PhaseDryRun {
		title = "Burn-down plan (dry run: nothing was changed)"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "| %s | %s |\n", k, v)
		}
	}
	b.WriteString("| | |\n|---|---|\n")
	row("Phase", st.Phase)
	row("Started", stamp(st.StartedAt))
	row("New root signing since", stamp(st.ActivatedAt))
	row("Deadline for SVIDs from before", stamp(st.Deadline))
	row("Finished", stamp(st.FinishedAt))
	row("Options", fmt.Sprintf("revoke tokens: %v, propagation %v, deadline %v, key store grace %v",
		st.Options.RevokeTokens, st.Options.Propagation, st.Options.Deadline, st.Options.KMSGrace))

	b.WriteString("\n## Certificate authority\n\n| | old | new |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| Root | %s | %s |\n", list(st.CA.RetiredRoots), orPlanned(st.CA.NewRoot, st))
	fmt.Fprintf(&b, "| Intermediate | %s | %s |\n", orDash(st.CA.OldIntermediate), orPlanned(st.CA.NewIntermediate, st))
	fmt.Fprintf(&b, "| JWT-SVID key | %s | %s |\n", list(st.CA.OldJWTKeys), orPlanned(st.CA.NewJWTKey, st))
	if len(st.DroppedCA) > 0 {
		fmt.Fprintf(&b, "\nDropped from every bundle: %s.\n", list(st.DroppedCA))
	}

	b.WriteString("\n## OAuth signing keys\n\n")
	if st.OAuth.Skipped != "" {
		fmt.Fprintf(&b, "Skipped: %s.\n", st.OAuth.Skipped)
	} else {
		fmt.Fprintf(&b, "| old | new | withdrawn |\n|---|---|---|\n| %s | %s | %s |\n",
			list(st.OAuth.OldKeys), orPlanned(st.OAuth.NewKey, st), list(st.OAuth.Dropped))
		if st.Options.RevokeTokens && st.Phase != PhaseDryRun {
			fmt.Fprintf(&b, "\nGrant families revoked (refresh tokens, codes and their access tokens): %d.\n", st.OAuth.RevokedFamilies)
		}
	}

	b.WriteString("\n## Key store\n\n")
	if len(st.KMS) == 0 {
		b.WriteString("No keys.\n")
	} else {
		b.WriteString("| key | type | old versions | new version | scheduled for destruction | destroyed at |\n|---|---|---|---|---|---|\n")
		for _, k := range st.KMS {
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s |\n", k.Key, k.Type, ints(k.OldVersions), k.NewVersion, ints(k.Retired), orDash(stamp(k.DestroyAt)))
		}
	}

	b.WriteString("\n## X.509-SVIDs\n\n")
	fmt.Fprintf(&b, "- identities holding an SVID from before: %d\n- re-issued under the new root: %d\n- revoked: %d\n",
		st.SVIDs.Before, st.SVIDs.Reissued, st.SVIDs.Revoked)
	if len(st.SVIDs.Hosts) > 0 {
		b.WriteString("\n### Hosts still holding SVIDs from before\n\n")
		b.WriteString("Their workloads lost their identity when the old SVIDs were revoked. Treat each host as compromised until shown otherwise: `rampart agent evict NAME`, rebuild or clean it, then re-join it with a new join token (`rampart token create`).\n\n")
		b.WriteString("| agent | SPIFFE ID | serial | expires |\n|---|---|---|---|\n")
		for _, s := range st.SVIDs.Stragglers {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.AgentID, s.SpiffeID, s.Serial, stamp(s.NotAfter))
		}
	}

	b.WriteString("\n## Steps\n\n| step | status | at | detail |\n|---|---|---|---|\n")
	for _, s := range st.Steps {
		d := s.Detail
		if s.Error != "" {
			d = "**error:** " + s.Error
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Name, s.Status, orDash(stamp(s.At)), strings.ReplaceAll(d, "|", "\\|"))
	}
	return b.String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func list(s []string) string {
	if len(s) == 0 {
		return "—"
	}
	return "`" + strings.Join(s, "`, `") + "`"
}

func ints(v []int) string {
	if len(v) == 0 {
		return "—"
	}
	return strings.Trim(strings.ReplaceAll(fmt.Sprint(v), " ", ", "), "[]")
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func orPlanned(s string, st *State) string {
	if s != "" {
		return "`" + s + "`"
	}
	if st.Phase == PhaseDryRun {
		return "(new)"
	}
	return "—"
}
