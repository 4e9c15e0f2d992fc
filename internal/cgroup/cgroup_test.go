package cgroup

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const (
	id1 = "3f5b7c1d2e4a6b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e"
	id2 = "b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e3f5b7c1d2e4a6b8c9d0e1f2a3"
	uid = "2c48913c-b29f-11e7-9350-020968147796"
)

func TestParsePath(t *testing.T) {
	uidU := strings.ReplaceAll(uid, "-", "_")
	for _, tc := range []struct {
		name, path string
		want       Info
		wantErr    string
	}{
		{name: "systemd service", path: "/system.slice/nginx.service", want: Info{Unit: "nginx.service"}},
		{name: "template service", path: "/system.slice/system-getty.slice/getty@tty1.service", want: Info{Unit: "getty@tty1.service"}},
		{name: "outermost service wins inside a delegated service", path: "/system.slice/containerd.service/evil.service", want: Info{Unit: "containerd.service"}},
		{name: "session scope", path: "/user.slice/user-1000.slice/session-3.scope"},
		{name: "user manager subtree: a user names its own cgroups", path: "/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service", want: Info{Delegated: true}},
		{name: "rootless podman is delegated", path: "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope", want: Info{Delegated: true}},
		{name: "forged docker scope under the user manager", path: "/user.slice/user-1000.slice/user@1000.service/docker-" + id1 + ".scope", want: Info{Delegated: true}},
		{name: "docker systemd driver", path: "/system.slice/docker-" + id1 + ".scope", want: Info{ContainerID: id1, Runtime: Docker}},
		{name: "docker cgroupfs driver", path: "/docker/" + id1, want: Info{ContainerID: id1, Runtime: Docker}},
		{name: "docker in docker: innermost", path: "/docker/" + id1 + "/docker/" + id2, want: Info{ContainerID: id2, Runtime: Docker}},
		{name: "podman root", path: "/machine.slice/libpod-" + id1 + ".scope/container", want: Info{ContainerID: id1, Runtime: Podman}},
		{name: "podman cgroupfs", path: "/libpod_parent/libpod-" + id1, want: Info{ContainerID: id1, Runtime: Podman}},
		{name: "podman conmon is not the container", path: "/machine.slice/libpod-conmon-" + id1 + ".scope"},
		{name: "crio conmon is not the container", path: "/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-conmon-" + id1 + ".scope"},
		{name: "k8s containerd systemd", path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			want: Info{ContainerID: id1, Runtime: Containerd, PodUID: uid}},
		{name: "k8s guaranteed crio", path: "/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-" + id1 + ".scope",
			want: Info{ContainerID: id1, Runtime: CRIO, PodUID: uid}},
		{name: "k8s cri-dockerd", path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/docker-" + id1 + ".scope",
			want: Info{ContainerID: id1, Runtime: Docker, PodUID: uid}},
		{name: "k8s cgroupfs", path: "/kubepods/besteffort/pod" + uid + "/" + id1, want: Info{ContainerID: id1, Runtime: Kubernetes, PodUID: uid}},
		{name: "k8s static pod uid", path: "/kubepods/burstable/pod0123456789abcdef0123456789abcdef/" + id1,
			want: Info{ContainerID: id1, Runtime: Kubernetes, PodUID: "0123456789abcdef0123456789abcdef"}},
		{name: "kind: kubelet.slice", path: "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			want: Info{ContainerID: id1, Runtime: Containerd, PodUID: uid}},
		{name: "pod sandbox slice alone is no container", path: "/kubepods.slice/kubepods-pod" + uidU + ".slice"},
		{name: "bare id outside docker or kubepods", path: "/" + id1},
		{name: "short id", path: "/system.slice/docker-abc.scope"},
		{name: "upper-case id", path: "/system.slice/docker-" + strings.ToUpper(id1) + ".scope"},
		{name: "bad pod uid", path: "/kubepods/besteffort/podnot-a-uid/" + id1, want: Info{ContainerID: id1, Runtime: Kubernetes}},
		{name: "root", path: "/"},
		{name: "outside the namespace", path: "/../../system.slice/x.service", wantErr: "outside the agent's cgroup namespace"},
		{name: "relative", path: "system.slice/x.service", wantErr: "not absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePath(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.Paths = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	v1 := "12:pids:/docker/" + id1 + "\n11:memory:/docker/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n0::/\n"
	got, err := Parse([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	if got.ContainerID != id1 || got.Runtime != Docker || len(got.Paths) != 1 {
		t.Fatalf("v1: %+v", got)
	}
	got, err = Parse([]byte("0::/system.slice/sshd.service\n"))
	if err != nil || got.Unit != "sshd.service" {
		t.Fatalf("v2: %+v %v", got, err)
	}
	// Hybrid (kind on a v1 host): the unified line is systemd's and is
	// ignored; the v1 lines name the pod's container.
	hybrid := "13:name=systemd:/docker/" + id2 + "/kubepods/besteffort/pod" + uid + "/" + id1 + "\n" +
		"4:blkio:/docker/" + id2 + "/kubepods/besteffort/pod" + uid + "/" + id1 + "\n" +
		"0::/docker/" + id2 + "/system.slice/containerd.service\n"
	got, err = Parse([]byte(hybrid))
	if err != nil || got.ContainerID != id1 || got.PodUID != uid || got.Runtime != Kubernetes || got.Unit != "" {
		t.Fatalf("hybrid: %+v %v", got, err)
	}
	// A root process may sit in different containers per v1 hierarchy:
	// refused, not guessed.
	_, err = Parse([]byte("2:pids:/docker/" + id1 + "\n1:memory:/docker/" + id2 + "\n"))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("conflict: err = %v", err)
	}
	// One hierarchy in a user's delegated subtree taints the others.
	got, err = Parse([]byte("2:pids:/system.slice/docker-" + id1 + ".scope\n0::/user.slice/user-1000.slice/user@1000.service/x.scope\n"))
	if err != nil || got.ContainerID != "" || !got.Delegated {
		t.Fatalf("delegated: %+v %v", got, err)
	}
	for _, bad := range []string{"", "garbage", "0:/x", strings.Repeat("0::/a\n", maxInput)} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%.20q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("0::/system.slice/nginx.service\n"))
	f.Add([]byte("0::/kubepods.slice/kubepods-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + id1 + ".scope\n"))
	f.Add([]byte("12:pids:/docker/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n"))
	f.Add([]byte("13:name=systemd:/docker/" + id2 + "/kubepods/besteffort/pod" + uid + "/" + id1 + "\n0::/docker/" + id2 + "/system.slice/containerd.service\n"))
	f.Add([]byte("0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := Parse(b)
		if err != nil {
			return
		}
		if in.ContainerID != "" && !hex64.MatchString(in.ContainerID) {
			t.Fatalf("container id %q", in.ContainerID)
		}
		if in.PodUID != "" && (!podUIDRE.MatchString(in.PodUID) || in.ContainerID == "") {
			t.Fatalf("pod uid %q container %q", in.PodUID, in.ContainerID)
		}
		if in.Unit != "" && !unitRE.MatchString(in.Unit) {
			t.Fatalf("unit %q", in.Unit)
		}
		if in.Delegated && (in.Unit != "" || in.ContainerID != "" || in.PodUID != "") {
			t.Fatalf("delegated path yielded %+v", in)
		}
		for _, p := range in.Paths {
			if strings.Contains("/"+p+"/", "/../") {
				t.Fatalf("path %q escapes", p)
			}
		}
	})
}
