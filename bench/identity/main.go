// Command identity measures, against real rampart processes on loopback:
// SVID issuance through the server API (SQLite or PostgreSQL) and Workload
// API fetch latency, each next to the ceiling, raw ECDSA P-256 signing.
// Run it through bench/identity.sh.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/bench/internal/benchserver"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/enroltest"
)

func main() {
	bin := flag.String("rampart", "bench/out/rampart", "rampart binary")
	pg := flag.String("postgres", "", "PostgreSQL URL (default: SQLite)")
	dur := flag.Duration("duration", 10*time.Second, "issuance load duration (bounded)")
	conc := flag.Int("concurrency", 4, "concurrent API clients")
	batch := flag.Int("batch", 100, "CSRs per request")
	fetches := flag.Int("fetches", 5000, "Workload API fetches")
	flag.Parse()
	if *dur > time.Minute {
		*dur = time.Minute
	}
	if err := run(*bin, *pg, *dur, *conc, *batch, *fetches); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(bin, pg string, dur time.Duration, conc, batch, fetches int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "rampart-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	backend := "sqlite"
	var args []string
	if pg != "" {
		backend = "postgresql"
		db, err := sql.Open("pgx", pg)
		if err != nil {
			return err
		}
		defer db.Close()
		b := make([]byte, 6)
		rand.Read(b)
		schema := "rampart_bench_" + hex.EncodeToString(b)
		if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
			return err
		}
		defer db.Exec("DROP SCHEMA " + schema + " CASCADE")
		u, _ := url.Parse(pg)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		args = []string{"--postgres", u.String()}
	}
	srv, err := benchserver.Start(ctx, bin, dir, args...)
	if err != nil {
		return err
	}
	defer srv.Stop()
	addr, tlsCfg, admin := srv.Addr, srv.TLS, srv.Admin

	// Attest as an agent ourselves.
	var jt api.CreateJoinTokenResponse
	if err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "bench"}, &jt); err != nil {
		return err
	}
	key, csr, err := enroltest.CSR("")
	if err != nil {
		return err
	}
	var att api.AttestResponse
	anon := &api.Client{BaseURL: admin.BaseURL, HTTP: admin.HTTP}
	if err := anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: jt.Token, CSR: csr}, &att); err != nil {
		return err
	}
	mtlsCfg := tlsCfg.Clone()
	mtlsCfg.Certificates = []tls.Certificate{{Certificate: att.SVID.Chain, PrivateKey: key}}
	agentClient := &api.Client{BaseURL: admin.BaseURL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: mtlsCfg, MaxIdleConnsPerHost: conc, ForceAttemptHTTP2: true}}}
	items := make([]api.SignItem, batch)
	for i := range batch {
		id := "spiffe://example.org/svc" + strconv.Itoa(i)
		var e api.Entry
		if err := admin.Do(ctx, http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: jt.AgentID, Selectors: []string{"unix:uid:" + strconv.Itoa(10000+i)}}, &e); err != nil {
			return err
		}
		_, c, err := enroltest.CSR(id)
		if err != nil {
			return err
		}
		items[i] = api.SignItem{EntryID: e.ID, CSR: c}
	}

	// Issuance under load.
	var issued, failed atomic.Int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				var resp api.SignResponse
				if err := agentClient.Do(ctx, http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: items}, &resp); err != nil {
					failed.Add(1)
					continue
				}
				issued.Add(int64(len(resp.Results)))
			}
		})
	}
	wg.Wait()
	rate := float64(issued.Load()) / time.Since(start).Seconds()
	ceiling := ecdsaRate(2 * time.Second)
	fmt.Printf("issuance  backend=%s concurrency=%d batch=%d: %.0f SVIDs/s (%d failed requests); raw ECDSA P-256 sign ceiling %.0f/s on one core, %.0f/s on %d cores; ratio %.2f of the 2-core ceiling\n",
		backend, conc, batch, rate, failed.Load(), ceiling, 2*ceiling, 2, rate/(2*ceiling))

	// Workload API latency, with a real agent.
	if err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "node"}, &jt); err != nil {
		return err
	}
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.CommandContext(ctx, bin, "agent", "--server", addr, "--ca-bundle", filepath.Join(dir, "server", "bundle.pem"),
		"--socket", sock, "--data", filepath.Join(dir, "agent"), "--log-level", "warn")
	agent.Env = append(os.Environ(), "RAMPART_JOIN_TOKEN="+jt.Token) // never on the command line
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { agent.Process.Signal(os.Interrupt); agent.Wait() }()
	if err := admin.Do(ctx, http.MethodPost, "/v1/entries", api.Entry{SpiffeID: "spiffe://example.org/bench", ParentID: jt.AgentID, Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())}}, nil); err != nil {
		return err
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		return err
	}
	defer client.Close()
	for end := time.Now().Add(30 * time.Second); ; {
		if _, err := client.FetchX509SVID(ctx); err == nil {
			break
		} else if time.Now().After(end) {
			return fmt.Errorf("no SVID from the agent: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	lat := make([]time.Duration, 0, fetches)
	for range fetches {
		t0 := time.Now()
		if _, err := client.FetchX509SVID(ctx); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("workload API FetchX509SVID (%d sequential, one go-spiffe client): p50 %v p90 %v p99 %v max %v\n",
		fetches, q(.5).Round(time.Microsecond), q(.9).Round(time.Microsecond), q(.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	return nil
}

func ecdsaRate(d time.Duration) float64 {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("x"))
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		ecdsa.SignASN1(rand.Reader, k, digest[:])
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}
