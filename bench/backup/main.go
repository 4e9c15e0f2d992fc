// Command backup makes the state bench/backup.sh backs up: a real server
// data directory (server.New initialises it: CA, keys, store), then
// -store-mb megabytes of issued-SVID records in the SQLite store (rows of
// about 200 bytes, as the CA writes them) and -audit-entries realistic
// audit entries (authorisation decisions of ~340 bytes) in the audit log,
// checkpointed and sealed into compressed segments as the server does.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/server"
	"github.com/rampartsec/rampart/internal/store"
)

func main() {
	data := flag.String("data", "", "data directory to create (must not exist)")
	storeMB := flag.Int("store-mb", 500, "megabytes of rows in the store")
	entries := flag.Int("audit-entries", 4_000_000, "audit log entries")
	flag.Parse()
	if *data == "" {
		log.Fatal("-data is required")
	}
	if _, err := os.Stat(*data); err == nil {
		log.Fatalf("%s exists", *data)
	}
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("bench.example")
	srv, err := server.New(ctx, server.Config{DataDir: *data, TrustDomain: td, Listen: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	st := srv.Store()
	db := filepath.Join(*data, "rampart.db")
	now := time.Now()
	batch := make([]store.IssuedSVID, 1000)
	n := 0
	for {
		fi, err := os.Stat(db)
		if err != nil {
			log.Fatal(err)
		}
		if fi.Size() >= int64(*storeMB)<<20 {
			break
		}
		for i := range batch {
			b := make([]byte, 16)
			rand.Read(b)
			batch[i] = store.IssuedSVID{Serial: hex.EncodeToString(b), SpiffeID: fmt.Sprintf("spiffe://bench.example/ns/prod/sa/service-%d", n%500),
				AgentID: fmt.Sprintf("spiffe://bench.example/rampart/agent/node-%d", n%50), EntryID: fmt.Sprintf("ent_%024d", n%2000),
				NotAfter: now.Add(24 * time.Hour), IssuedAt: now}
			n++
		}
		if err := st.RecordSVIDs(ctx, batch); err != nil {
			log.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		log.Fatal(err)
	}
	skey, err := os.ReadFile(filepath.Join(*data, "keys", "audit.key"))
	if err != nil {
		log.Fatal(err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		log.Fatal(err)
	}
	l, err := audit.OpenWith(filepath.Join(*data, "audit"), "bench.example/audit", audit.Options{})
	if err != nil {
		log.Fatal(err)
	}
	es := make([]*audit.Entry, 0, 10000)
	for i := range *entries {
		es = append(es, &audit.Entry{V: 1, Time: now.Add(time.Duration(i) * time.Millisecond), Actor: audit.Actor{SpiffeID: fmt.Sprintf("spiffe://bench.example/ns/prod/sa/service-%d", i%500)},
			Action: "authz.decision", Target: fmt.Sprintf("spiffe://bench.example/ns/prod/sa/service-%d", (i*7)%500), Outcome: audit.OutcomeSuccess,
			RequestID: fmt.Sprintf("req-%016x", i), Source: fmt.Sprintf("spiffe://bench.example/ns/prod/sa/service-%d", (i*7)%500),
			Details: map[string]string{"method": "GET", "path": fmt.Sprintf("/v1/orders/%d", i%100000), "policy": "v3:9f2c1a", "rule": "orders-read"}})
		if len(es) == cap(es) || i == *entries-1 {
			if _, err := l.AppendEntries(ctx, es...); err != nil {
				log.Fatal(err)
			}
			es = es[:0]
		}
	}
	if _, err := l.Checkpoint(signer); err != nil {
		log.Fatal(err)
	}
	if _, err := l.Seal(); err != nil {
		log.Fatal(err)
	}
	if _, err := l.CloseWithCheckpoint(signer); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("state: %d SVID rows in the store, %d audit entries\n", n, *entries)
}
