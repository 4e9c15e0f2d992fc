package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestMayCall(t *testing.T) {
	const head = "service: spiffe://example.org/payments\n"
	for _, tc := range []struct {
		name, src, caller string
		want              bool
	}{
		{"exact allow", head + "rules:\n- name: a\n  callers: [spiffe://example.org/orders]\n", "spiffe://example.org/orders", true},
		{"not named", head + "rules:\n- name: a\n  callers: [spiffe://example.org/orders]\n", "spiffe://example.org/batch", false},
		{"pattern", head + "rules:\n- name: a\n  callers: [\"spiffe://example.org/batch/*\"]\n", "spiffe://example.org/batch/nightly", true},
		{"pattern is not its prefix", head + "rules:\n- name: a\n  callers: [\"spiffe://example.org/batch/*\"]\n", "spiffe://example.org/batch", false},
		{"any of the domain", head + "rules:\n- name: a\n  callers: [\"*\"]\n", "spiffe://example.org/x", true},
		{"any is never another domain", head + "rules:\n- name: a\n  callers: [\"*\"]\n", "spiffe://other.org/x", false},
		{"allow limited to a path still opens the port", head + "rules:\n- name: a\n  callers: [spiffe://example.org/orders]\n  paths: [/x]\n  methods: [GET]\n", "spiffe://example.org/orders", true},
		{"allow with a condition still opens the port", head + "rules:\n- name: a\n  callers: [spiffe://example.org/orders]\n  when: 'true'\n", "spiffe://example.org/orders", true},
		{"unconditional deny wins", head + "rules:\n- name: d\n  action: deny\n  callers: [\"spiffe://example.org/orders\"]\n- name: a\n  callers: [\"*\"]\n", "spiffe://example.org/orders", false},
		{"deny of one path leaves the port open", head + "rules:\n- name: d\n  action: deny\n  callers: [spiffe://example.org/orders]\n  paths: [/admin/*]\n- name: a\n  callers: [\"*\"]\n", "spiffe://example.org/orders", true},
		{"deny only", head + "rules:\n- name: d\n  action: deny\n  callers: [spiffe://example.org/orders]\n", "spiffe://example.org/orders", false},
		{"dry-run lets all through", head + "mode: dry-run\nrules:\n- name: d\n  action: deny\n  callers: [\"*\"]\n", "spiffe://example.org/orders", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			if got := p.MayCall(spiffeid.RequireFromString(tc.caller)); got != tc.want {
				t.Fatalf("MayCall(%s) = %v, want %v", tc.caller, got, tc.want)
			}
		})
	}
	p, _ := Parse([]byte(head + "rules:\n- name: a\n  callers: [\"*\"]\n"))
	if p.MayCall(spiffeid.ID{}) {
		t.Fatal("the zero ID may call")
	}
}

// MayCall must agree with Decide: whenever Decide allows some request of a
// caller, MayCall says so (the network may not close what the proxy allows).
func TestMayCallCoversDecide(t *testing.T) {
	src := "service: spiffe://example.org/payments\nrules:\n" +
		"- name: d\n  action: deny\n  callers: [spiffe://example.org/a]\n" +
		"- name: d2\n  action: deny\n  callers: [spiffe://example.org/b]\n  paths: [/admin/*]\n" +
		"- name: a1\n  callers: [\"spiffe://example.org/*\"]\n  methods: [GET]\n"
	p, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"a", "b", "c", "x/y"} {
		id := spiffeid.RequireFromString("spiffe://example.org/" + c)
		for _, path := range []string{"/", "/admin/x", "/y"} {
			for _, m := range []string{"GET", "POST"} {
				if e.Decide(&Request{Caller: id, Method: m, Path: path}).Allowed && !p.MayCall(id) {
					t.Fatalf("%s %s by %s is allowed but MayCall says no", m, path, id)
				}
			}
		}
	}
}

func TestNetworkAppPorts(t *testing.T) {
	const rules = "rules:\n- name: a\n  callers: [\"*\"]\n"
	p, err := Parse([]byte("service: spiffe://example.org/p\nnetwork:\n  app_ports: [8080, 9090]\n" + rules))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.AppPorts) != 2 || p.AppPorts[0] != 8080 || p.AppPorts[1] != 9090 {
		t.Fatalf("app ports %v", p.AppPorts)
	}
	for _, tc := range []struct{ net, want string }{
		{"  app_ports: [0]\n", "line 3: network.app_ports[0]: \"0\": want a TCP port"},
		{"  app_ports: [70000]\n", "want a TCP port"},
		{"  app_ports: [\"08080\"]\n", "want a TCP port"},
		{"  app_ports: [80, 80]\n", "80 listed twice"},
		{"  app_ports: 80\n", "network.app_ports: want a list"},
		{"  ports: [80]\n", "unknown field \"ports\""},
	} {
		_, err := Parse([]byte("service: spiffe://example.org/p\nnetwork:\n" + tc.net + rules))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("network %q: error %v, want %q", tc.net, err, tc.want)
		}
	}
}

// MayCallers is MayCall over a list, whatever the rules.
func TestMayCallersAgreesWithMayCall(t *testing.T) {
	known := []spiffeid.ID{}
	for _, s := range []string{"a", "b", "batch/x", "batch/y", "batch", "c/d"} {
		known = append(known, spiffeid.RequireFromString("spiffe://example.org/"+s))
	}
	known = append(known, spiffeid.RequireFromString("spiffe://other.org/a"), spiffeid.ID{})
	for _, src := range []string{
		"rules:\n- name: a\n  callers: [spiffe://example.org/a, \"spiffe://example.org/batch/*\"]\n",
		"rules:\n- name: d\n  action: deny\n  callers: [spiffe://example.org/batch/x]\n- name: a\n  callers: [\"*\"]\n",
		"rules:\n- name: d\n  action: deny\n  callers: [\"spiffe://example.org/batch/*\"]\n  paths: [/x]\n- name: a\n  callers: [\"*\"]\n",
		"mode: dry-run\nrules:\n- name: d\n  action: deny\n  callers: [\"*\"]\n",
		"rules:\n- name: a\n  callers: [spiffe://example.org/nobody]\n",
	} {
		p, err := Parse([]byte("service: spiffe://example.org/p\n" + src))
		if err != nil {
			t.Fatal(err)
		}
		var want []spiffeid.ID
		for _, k := range known {
			if p.MayCall(k) {
				want = append(want, k)
			}
		}
		got := p.MayCallers(known)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s:\nMayCallers %v\nMayCall    %v", src, got, want)
		}
	}
}
