package netpol

import (
	"encoding/json"
	"flag"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func mustPolicies(t testing.TB, src string) []*policy.Policy {
	t.Helper()
	ps, err := policy.ParseAll([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func id(s string) spiffeid.ID { return spiffeid.RequireFromString("spiffe://example.org/" + s) }

// The shop: orders calls payments, payments and the nightly batch call the
// ledger, nobody calls orders; payments' application listens on 8080
// behind its proxy.
const shopPolicies = `service: spiffe://example.org/ns/shop/sa/payments
network:
  app_ports: [8080]
rules:
- name: orders-pays
  callers: [spiffe://example.org/ns/shop/sa/orders]
  methods: [POST]
  paths: [/pay]
---
service: spiffe://example.org/ns/shop/sa/ledger
rules:
- name: no-ghost
  action: deny
  callers: [spiffe://example.org/ns/shop/sa/orders]
- name: writers
  callers: [spiffe://example.org/ns/shop/sa/payments, "spiffe://example.org/batch/*", spiffe://example.org/ghost]
`

func shopPlacements() []Placement {
	return []Placement{
		{Service: id("ns/shop/sa/orders"), Host: netip.MustParseAddr("10.0.0.1"), Ports: []uint16{8443}},
		{Service: id("ns/shop/sa/payments"), Host: netip.MustParseAddr("10.0.0.2"), Ports: []uint16{8443}},
		{Service: id("ns/shop/sa/ledger"), Host: netip.MustParseAddr("10.0.0.3"), Ports: []uint16{9443}},
		{Service: id("ns/shop/sa/ledger"), Host: netip.MustParseAddr("fd00::3"), Ports: []uint16{9443}},
		{Service: id("batch/nightly"), Host: netip.MustParseAddr("10.0.0.3"), Ports: nil},
		{Service: id("ns/shop/sa/payments"), Host: netip.MustParseAddr("::ffff:10.0.0.2"), Ports: []uint16{8443}}, // the same host, mapped
	}
}

func shopPods() PodMap {
	return PodMap{
		id("ns/shop/sa/orders"):   {SpiffeID: id("ns/shop/sa/orders"), Namespace: "shop", Labels: map[string]string{"app": "orders"}},
		id("ns/shop/sa/payments"): {SpiffeID: id("ns/shop/sa/payments"), Namespace: "shop", Labels: map[string]string{"app": "payments"}},
		id("ns/shop/sa/ledger"):   {SpiffeID: id("ns/shop/sa/ledger"), Namespace: "shop", Labels: map[string]string{"app": "ledger"}},
	}
}

func shopView(t testing.TB) *View {
	return Build(shopPlacements(), mustPolicies(t, shopPolicies))
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs from the golden file (go test -update rewrites it):\n%s", name, strings.Join(DiffLines(string(want), got), "\n"))
	}
}

func TestBuild(t *testing.T) {
	v := shopView(t)
	var edges []string
	for _, e := range v.Edges {
		edges = append(edges, e.From.Path()+" -> "+e.To.Path())
	}
	want := []string{
		"/batch/nightly -> /ns/shop/sa/ledger",
		"/ns/shop/sa/orders -> /ns/shop/sa/payments",
		"/ns/shop/sa/payments -> /ns/shop/sa/ledger",
	}
	if strings.Join(edges, "\n") != strings.Join(want, "\n") {
		t.Fatalf("edges:\n%s\nwant:\n%s", strings.Join(edges, "\n"), strings.Join(want, "\n"))
	}
	// The ghost is reported, not silently dropped.
	if len(v.Problems) != 1 || !strings.Contains(v.Problems[0], "caller spiffe://example.org/ghost runs on no host") || !strings.Contains(v.Problems[0], "line 15") {
		t.Fatalf("problems %q", v.Problems)
	}
	pay, _ := v.Service(id("ns/shop/sa/payments"))
	if len(pay.Hosts) != 1 {
		t.Fatalf("payments hosts %v: a v4-mapped address is the same host", pay.Hosts)
	}
	if got := len(v.Policies); got != 2 || !strings.HasPrefix(v.Policies[0], "spiffe://example.org/ns/shop/sa/ledger@") {
		t.Fatalf("policies %v", v.Policies)
	}
	// A policy for a service that runs nowhere.
	v2 := Build(nil, mustPolicies(t, shopPolicies))
	if !strings.Contains(strings.Join(v2.Problems, "\n"), "policy spiffe://example.org/ns/shop/sa/payments@") {
		t.Fatalf("problems %q", v2.Problems)
	}
}

func TestNFTGolden(t *testing.T) {
	v := shopView(t)
	for _, h := range v.Hosts() {
		golden(t, "host-"+strings.ReplaceAll(h.String(), ":", "_")+".nft", v.HostTable(h).NFT())
	}
}

func TestKubernetesGolden(t *testing.T) {
	v := shopView(t)
	out, problems := v.Kubernetes(shopPods())
	golden(t, "kubernetes.yaml", out)
	// The batch job has neither pods in the map nor a /ns/NS/sa/SA ID.
	if got := strings.Join(problems, "\n"); !strings.Contains(got, "spiffe://example.org/batch/nightly: no pods") || !strings.Contains(got, "caller spiffe://example.org/batch/nightly has no pods") {
		t.Fatalf("problems %q", problems)
	}
	out, problems = v.Cilium(PodMap{})
	golden(t, "cilium.yaml", out)
	if len(problems) == 0 {
		t.Fatal("cilium: the batch job should be reported")
	}
}

// Deterministic: the same inputs in another order render the same bytes.
func TestDeterministic(t *testing.T) {
	ps := shopPlacements()
	for i, j := 0, len(ps)-1; i < j; i, j = i+1, j-1 {
		ps[i], ps[j] = ps[j], ps[i]
	}
	pols := mustPolicies(t, shopPolicies)
	pols[0], pols[1] = pols[1], pols[0]
	a, b := shopView(t), Build(ps, pols)
	for _, h := range a.Hosts() {
		if a.HostTable(h).NFT() != b.HostTable(h).NFT() {
			t.Fatalf("host %s renders differently with inputs reordered", h)
		}
	}
	ka, _ := a.Kubernetes(shopPods())
	kb, _ := b.Kubernetes(shopPods())
	if ka != kb {
		t.Fatal("kubernetes renders differently with inputs reordered")
	}
}

func TestParsePodMap(t *testing.T) {
	m, err := ParsePodMap(strings.NewReader("- spiffe_id: spiffe://example.org/a\n  namespace: shop\n  labels: {app: a}\n"))
	if err != nil || m[id("a")].Labels["app"] != "a" {
		t.Fatalf("%v %v", m, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"- namespace: shop\n  labels: {app: a}\n", "line 1: [0].spiffe_id: required"},
		{"- spiffe_id: http://x\n  namespace: shop\n  labels: {a: b}\n", "[0].spiffe_id: \"http://x\""},
		{"- spiffe_id: spiffe://example.org/a\n  namespace: Shop!\n  labels: {a: b}\n", "is not a Kubernetes namespace name"},
		{"- spiffe_id: spiffe://example.org/a\n  namespace: shop\n  labels: {\"a b\": c}\n", "is not a valid label"},
		{"- spiffe_id: spiffe://example.org/a\n  namespace: shop\n", "give labels or a service_account"},
		{"- spiffe_id: spiffe://example.org/a\n  namespace: shop\n  labels: {a: b}\n  color: red\n", "color"},
		{"- spiffe_id: spiffe://example.org/a\n  namespace: s\n  labels: {a: b}\n- spiffe_id: spiffe://example.org/a\n  namespace: s\n  labels: {a: b}\n", "listed twice"},
		{"{}", "want a list"},
	} {
		if _, err := ParsePodMap(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParsePodMap(f *testing.F) {
	f.Add("- spiffe_id: spiffe://example.org/a\n  namespace: shop\n  labels: {app: a}\n")
	f.Add("- spiffe_id: spiffe://example.org/ns/a/sa/b\n  namespace: a\n  service_account: b\n")
	f.Add("[]")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParsePodMap(strings.NewReader(s))
		if err != nil {
			return
		}
		for k, p := range m {
			if k != p.SpiffeID || !dnsLabel.MatchString(p.Namespace) {
				t.Fatalf("accepted %+v", p)
			}
		}
	})
}

func TestDiffLines(t *testing.T) {
	a := "# x\nline 1\nline 2\nline 3\n"
	b := "# y\nline 1\nline 3\nline 4\n"
	got := strings.Join(DiffLines(a, b), "|")
	if got != "- line 2|+ line 4" {
		t.Fatalf("diff %q", got)
	}
	if d := DiffLines(a, "# other comment\n"+a); len(d) != 0 {
		t.Fatalf("comments differ only: %q", d)
	}
}

func TestDiffObjects(t *testing.T) {
	v := shopView(t)
	want, _ := v.Kubernetes(shopPods())
	d, err := DiffObjects(want, []io.Reader{strings.NewReader(want)})
	if err != nil || len(d) != 0 {
		t.Fatalf("same objects: %q %v", d, err)
	}
	edited := strings.Replace(want, "port: 9443", "port: 9444", 1)
	extra := "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: old, namespace: shop, labels: {app.kubernetes.io/managed-by: rampart}}\nspec: {podSelector: {}}\n" +
		"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: theirs, namespace: shop}\nspec: {podSelector: {}}\n"
	d, err = DiffObjects(want, []io.Reader{strings.NewReader(edited), strings.NewReader(extra)})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(d, "\n")
	if !strings.Contains(got, "differs: NetworkPolicy shop/rampart-ns-shop-sa-ledger-") || !strings.Contains(got, "not wanted: NetworkPolicy shop/old") || strings.Contains(got, "theirs") {
		t.Fatalf("diff:\n%s", got)
	}
}

// The rendered tables are valid nftables: nft parses and checks them
// (nft -c talks to the kernel's nf_tables without committing).
func TestNFTSyntax(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nft is not installed (.ci/run installs Debian's nftables)")
		}
		t.Skip("nft is not installed (apt-get install nftables)")
	}
	v := shopView(t)
	for _, h := range v.Hosts() {
		f := filepath.Join(t.TempDir(), "t.nft")
		if err := os.WriteFile(f, []byte(v.HostTable(h).NFT()), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(nft, "-c", "-f", f).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "Operation not permitted") && os.Geteuid() != 0 {
				t.Skip("nft -c needs CAP_NET_ADMIN")
			}
			t.Fatalf("host %s: nft -c: %v\n%s", h, err, out)
		}
	}
}

// A policy naming as application port a port some service listens on as
// its inbound port is reported, and the port stays loopback-only (fail
// closed): a workload that listens on another service's application port
// must not get it opened to its own callers (red team).
func TestAppPortClash(t *testing.T) {
	pols := mustPolicies(t, "service: spiffe://example.org/a\nnetwork:\n  app_ports: [8443]\nrules:\n- name: r\n  callers: [spiffe://example.org/b]\n")
	v := Build([]Placement{
		{Service: id("a"), Host: netip.MustParseAddr("10.0.0.1"), Ports: []uint16{8443}},
		{Service: id("b"), Host: netip.MustParseAddr("10.0.0.2")},
	}, pols)
	if !strings.Contains(strings.Join(v.Problems, "\n"), "port 8443 is an application port of spiffe://example.org/a") {
		t.Fatalf("problems %q", v.Problems)
	}
	tab := v.HostTable(netip.MustParseAddr("10.0.0.1"))
	if len(tab.App) != 1 || len(tab.Proxy) != 0 || admits(tab, netip.MustParseAddr("10.0.0.2"), false, 8443) {
		t.Fatalf("table:\n%s", tab.NFT())
	}
}

// The view and a host table survive JSON (the server sends them so).
func TestJSONRoundTrip(t *testing.T) {
	v := shopView(t)
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back View
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, h := range v.Hosts() {
		if v.HostTable(h).NFT() != back.HostTable(h).NFT() {
			t.Fatalf("host %s renders differently after JSON", h)
		}
	}
	tab := v.HostTable(netip.MustParseAddr("10.0.0.3"))
	b, _ = json.Marshal(tab)
	var tb HostTable
	if err := json.Unmarshal(b, &tb); err != nil || tb.NFT() != tab.NFT() {
		t.Fatalf("host table after JSON: %v\n%s", err, tb.NFT())
	}
}

// Two services claiming one port on one host (SO_REUSEPORT, or a lie):
// the port is open to neither's callers, and the clash is reported.
func TestContestedPortClosed(t *testing.T) {
	pols := mustPolicies(t, "service: spiffe://example.org/a\nrules:\n- name: r\n  callers: [spiffe://example.org/c]\n---\nservice: spiffe://example.org/b\nrules:\n- name: r\n  callers: [spiffe://example.org/d]\n")
	h := netip.MustParseAddr("10.0.0.1")
	v := Build([]Placement{
		{Service: id("a"), Host: h, Ports: []uint16{9443}},
		{Service: id("b"), Host: h, Ports: []uint16{9443}},
		{Service: id("c"), Host: netip.MustParseAddr("10.0.0.3")},
		{Service: id("d"), Host: netip.MustParseAddr("10.0.0.4")},
	}, pols)
	if !strings.Contains(strings.Join(v.Problems, "\n"), "port 9443 is claimed by spiffe://example.org/a and by spiffe://example.org/b") {
		t.Fatalf("problems %q", v.Problems)
	}
	tab := v.HostTable(h)
	for _, src := range []string{"10.0.0.3", "10.0.0.4"} {
		if admits(tab, netip.MustParseAddr(src), false, 9443) {
			t.Fatalf("%s reaches the contested port:\n%s", src, tab.NFT())
		}
	}
}

// Replicas of a service reach each other when its policy lets it call
// itself; a host's table names only its own services' policies.
func TestReplicasAndHostHeader(t *testing.T) {
	pols := mustPolicies(t, "service: spiffe://example.org/a\nrules:\n- name: r\n  callers: [spiffe://example.org/a]\n---\nservice: spiffe://example.org/secret\nrules:\n- name: r\n  callers: [spiffe://example.org/a]\n")
	v := Build([]Placement{
		{Service: id("a"), Host: netip.MustParseAddr("10.0.0.1"), Ports: []uint16{9443}},
		{Service: id("a"), Host: netip.MustParseAddr("10.0.0.2"), Ports: []uint16{9443}},
		{Service: id("secret"), Host: netip.MustParseAddr("10.0.0.3"), Ports: []uint16{9443}},
	}, pols)
	tab := v.HostTable(netip.MustParseAddr("10.0.0.1"))
	if !admits(tab, netip.MustParseAddr("10.0.0.2"), false, 9443) {
		t.Fatalf("a replica cannot reach another:\n%s", tab.NFT())
	}
	if strings.Contains(tab.Header, "secret") {
		t.Fatalf("host 10.0.0.1's table names another host's policy:\n%s", tab.Header)
	}
}

// A zone in a host address (a link-local agent, or a server that lies)
// never reaches a render or a file name.
func TestZonesDropped(t *testing.T) {
	h := netip.MustParseAddr("fe80::1%x\nflush ruleset\n#")
	v := Build([]Placement{{Service: id("a"), Host: h, Ports: []uint16{9443}}}, nil)
	for _, hh := range v.Hosts() {
		if hh.Zone() != "" {
			t.Fatalf("host %q keeps its zone", hh)
		}
		if out := v.HostTable(hh).NFT(); strings.Contains(out, "flush ruleset") {
			t.Fatalf("render:\n%s", out)
		}
	}
	if out := v.HostTable(h).NFT(); strings.Contains(out, "flush") {
		t.Fatalf("a zoned address given to HostTable:\n%s", out)
	}
}
