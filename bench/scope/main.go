// Command scope writes the synthetic audit log bench/scope.sh measures
// breach scope on: --entries entries over 30 days (calls, refusals, token
// exchanges, key uses, SVID issuance by 43 services), with the ground
// truth for spiffe://example.org/orders over the 7 days from day 10. It
// prints the window as "SINCE UNTIL" for the script, and the truth's size.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rampartsec/rampart/internal/respond/scopetest"
)

func main() {
	dir := flag.String("data", "bench/out/scope", "a server data directory to create (the log goes in DIR/audit)")
	n := flag.Int64("entries", 10_000_000, "entries to write")
	flag.Parse()
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	since, until := start.Add(10*24*time.Hour), start.Add(17*24*time.Hour)
	if _, err := os.Stat(filepath.Join(*dir, "audit")); err == nil {
		fmt.Println(since.Format(time.RFC3339), until.Format(time.RFC3339))
		return
	}
	t0 := time.Now()
	truth, err := scopetest.Generate(context.Background(), filepath.Join(*dir, "audit"), scopetest.Options{Entries: *n, Start: start,
		Span: 30 * 24 * time.Hour, Seed: 20, Since: since, Until: until,
		Progress: func(i int64) {
			fmt.Fprintf(os.Stderr, "  %d entries written (%v)\n", i, time.Since(t0).Round(time.Second))
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "generated %d entries in %v; truth for %s in the window: %d entries, %d reached and %d refused call kinds, %d SVIDs\n",
		*n, time.Since(t0).Round(time.Second), scopetest.Victim, truth.Entries, len(truth.Reached), len(truth.Refused), len(truth.SVIDs))
	fmt.Println(since.Format(time.RFC3339), until.Format(time.RFC3339))
}
