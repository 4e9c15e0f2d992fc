package selector

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Selector
		wantErr string
	}{
		{in: "unix:uid:1000", want: Selector{UnixUID, "1000"}},
		{in: "unix:uid:0", want: Selector{UnixUID, "0"}},
		{in: "unix:gid:42", want: Selector{UnixGID, "42"}},
		{in: "unix:path:/usr/bin/orders", want: Selector{UnixPath, "/usr/bin/orders"}},
		{in: "unix:sha256:" + strings.Repeat("ab", 32), want: Selector{UnixSHA256, strings.Repeat("ab", 32)}},
		{in: "unix:uid:-1", wantErr: "decimal id"},
		{in: "unix:uid:01", wantErr: "leading zeros"},
		{in: "unix:uid:4294967296", wantErr: "decimal id"},
		{in: "unix:uid:", wantErr: "decimal id"},
		{in: "unix:path:relative/bin", wantErr: "absolute, clean path"},
		{in: "unix:path:/usr/../etc/passwd", wantErr: "absolute, clean path"},
		{in: "unix:sha256:" + strings.Repeat("AB", 32), wantErr: "lower-case hex"},
		{in: "unix:sha256:abcd", wantErr: "64 lower-case hex"},
		{in: "k8s:ns:default", want: Selector{K8sNamespace, "default"}},
		{in: "k8s:sa:orders", want: Selector{K8sSA, "orders"}},
		{in: "k8s:pod-uid:2c48913c-b29f-11e7-9350-020968147796", want: Selector{K8sPodUID, "2c48913c-b29f-11e7-9350-020968147796"}},
		{in: "k8s:pod-name:orders-7d9f-xk2p", want: Selector{K8sPodName, "orders-7d9f-xk2p"}},
		{in: "k8s:container-name:app", want: Selector{K8sContainerName, "app"}},
		{in: "k8s:node-name:node-1.example", want: Selector{K8sNodeName, "node-1.example"}},
		{in: "k8s:pod-label:app.kubernetes.io/name:orders", want: Selector{K8sPodLabel, "app.kubernetes.io/name:orders"}},
		{in: "k8s:pod-label:tier:", want: Selector{K8sPodLabel, "tier:"}},
		{in: "systemd:unit:nginx.service", want: Selector{SystemdUnit, "nginx.service"}},
		{in: "systemd:unit:getty@tty1.service", want: Selector{SystemdUnit, "getty@tty1.service"}},
		{in: "container:id:" + strings.Repeat("ab", 32), want: Selector{ContainerID, strings.Repeat("ab", 32)}},
		{in: "container:runtime:cri-o", want: Selector{ContainerRuntime, "cri-o"}},
		{in: "k8s:ns:Default", wantErr: "DNS label"},
		{in: "k8s:pod-uid:nope", wantErr: "pod UID"},
		{in: "k8s:pod-label:noval", wantErr: "KEY:VALUE"},
		{in: "k8s:pod-label:a:b:c", wantErr: "KEY:VALUE"},
		{in: "systemd:unit:nginx.scope", wantErr: "NAME.service"},
		{in: "systemd:unit:../x.service", wantErr: "NAME.service"},
		{in: "container:id:abc", wantErr: "64 lower-case hex"},
		{in: "container:runtime:lxc", wantErr: "docker, podman"},
		{in: "k9s:ns:default", wantErr: "unknown type"},
		{in: "unix:pid:1", wantErr: "unknown type"},
		{in: "", wantErr: "unknown type"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want round trip to %q", got.String(), tt.in)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	uid := Selector{UnixUID, "1000"}
	gid := Selector{UnixGID, "1000"}
	path := Selector{UnixPath, "/bin/app"}
	attested := NewSet(uid, gid)
	tests := []struct {
		name  string
		entry []Selector
		want  bool
	}{
		{"all present", []Selector{uid, gid}, true},
		{"subset", []Selector{uid}, true},
		{"one missing", []Selector{uid, path}, false},
		{"other uid", []Selector{{UnixUID, "1001"}}, false},
		{"empty entry matches nothing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := attested.Matches(tt.entry); got != tt.want {
				t.Fatalf("Matches(%v) = %v, want %v", tt.entry, got, tt.want)
			}
		})
	}
}

func TestCheckEntry(t *testing.T) {
	uid := Selector{UnixUID, "1000"}
	gid := Selector{UnixGID, "1000"}
	path := Selector{UnixPath, "/usr/bin/payments"}
	hash := Selector{UnixSHA256, strings.Repeat("ab", 32)}
	tests := []struct {
		name    string
		entry   []Selector
		wantErr string
	}{
		{"uid", []Selector{uid}, ""},
		{"gid and path", []Selector{gid, path}, ""},
		{"uid and hash", []Selector{uid, hash}, ""},
		{"none", nil, "at least one selector"},
		{"path only", []Selector{path}, "needs a unix:uid or unix:gid selector"},
		{"hash only", []Selector{hash}, "needs a unix:uid or unix:gid selector"},
		{"path and hash", []Selector{path, hash}, "needs a unix:uid or unix:gid selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckEntry(tt.entry)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckEntry(%v): %v", tt.entry, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckEntry(%v) = %v, want %q", tt.entry, err, tt.wantErr)
			}
		})
	}
}

func TestParseAllNormalizes(t *testing.T) {
	got, err := ParseAll([]string{"unix:uid:1", "unix:gid:2", "unix:uid:1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != UnixGID || got[1].Type != UnixUID {
		t.Fatalf("ParseAll = %v, want sorted [gid uid] without duplicates", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"unix:uid:1000", "unix:gid:0", "unix:path:/a/b", "unix:sha256:" + strings.Repeat("0", 64), "unix:uid:01", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		if sel.String() != s {
			t.Fatalf("accepted %q but it prints as %q", s, sel.String())
		}
		if err := sel.Validate(); err != nil {
			t.Fatalf("accepted %q but Validate fails: %v", s, err)
		}
	})
}
