package workload

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A PID names a process only while that process lives: once it exits the
// number is free for any other. And a live process can exec another
// program after it connected. So the caller is pinned as soon as its
// connection is accepted:
//
//   - SO_PEERCRED: pid, uid and gid at connect(2);
//   - SO_PEERPIDFD (Linux 6.5): a pidfd for that very process, obtained
//     without going through its PID (pidfd_open(PID) at accept is the
//     fallback on older kernels, and can already name a successor);
//   - /proc/PID opened as a directory, then the pidfd checked alive: the
//     PID cannot have been reused while that process lives, so the
//     directory is the caller's, and every read through it fails once the
//     caller has exited, even if its PID is taken again;
//   - the start time (/proc/PID/stat field 22), the executable's identity
//     (path, device and inode of /proc/PID/exe) and the caller's user and
//     mount namespaces (/proc/PID/ns/user, ns/mnt) at accept.
//
// Each attestation then reads through the pinned directory, and refuses
// the caller if it is gone, if its start time changed, if its effective
// uid or gid no longer match SO_PEERCRED, if its executable is not the
// one it ran at accept, or if it entered another user namespace.

// exeID identifies an executable file.
type exeID struct {
	path     string
	dev, ino uint64
}

// sameFile reports whether e and o identify the same file (or both
// none), whatever its name.
func (e exeID) sameFile(o exeID) bool {
	return e.dev == o.dev && e.ino == o.ino && (e.path == "") == (o.path == "")
}

func (e exeID) String() string {
	if e.path == "" {
		return "(unreadable)"
	}
	return e.path
}

// nsID identifies a namespace: the nsfs inode its /proc/PID/ns link
// leads to. The zero value is "unknown" (the link could not be read).
type nsID struct{ dev, ino uint64 }

func (n nsID) known() bool { return n != nsID{} }

func (n nsID) String() string {
	if !n.known() {
		return "unknown"
	}
	return "[" + strconv.FormatUint(n.ino, 10) + "]"
}

// namespaces are the namespaces of a process that attestation cares
// about: the user namespace decides what the process may do to its own
// /proc/PID/exe; the mount namespace is where its paths were resolved.
type namespaces struct{ user, mnt nsID }

// process is the caller on one connection, pinned at accept.
type process struct {
	Caller           // from SO_PEERCRED
	pidfdKind string // "SO_PEERPIDFD", "pidfd_open" or "" (none)

	mu     sync.RWMutex // held for reading while fds are in use
	closed bool
	pidfd  int // -1: none
	procfd int // the caller's /proc/PID directory; -1: none
	start  uint64
	exe    exeID
	ns     namespaces // at accept; unknown parts could not be read
	err    error      // why the caller could not be pinned; it is refused
}

// pinConn pins the process on the other end of c.
func pinConn(c *net.UnixConn, procDir string) *process {
	p := &process{pidfd: -1, procfd: -1}
	raw, err := c.SyscallConn()
	if err != nil {
		p.err = fmt.Errorf("workload: %w", err)
		return p
	}
	if err := raw.Control(func(fd uintptr) { p.pinFD(int(fd), procDir) }); err != nil && p.err == nil {
		p.err = fmt.Errorf("workload: %w", err)
	}
	return p
}

func (p *process) pinFD(sock int, procDir string) {
	cred, err := unix.GetsockoptUcred(sock, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		p.err = fmt.Errorf("workload: peer credentials: %w", err)
		return
	}
	p.Caller = Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	if cred.Pid <= 0 {
		p.err = errors.New("workload: the kernel reports no pid for the caller (another pid namespace?)")
		return
	}
	pidfd, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	switch {
	case err == nil:
		p.pidfd, p.pidfdKind = pidfd, "SO_PEERPIDFD"
	case errors.Is(err, unix.ENOPROTOOPT), errors.Is(err, unix.EINVAL):
		// Before Linux 6.5: a pidfd through the PID, which may already
		// name another process; the start time and credential checks
		// below are what is left.
		if pidfd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
			p.pidfd, p.pidfdKind = pidfd, "pidfd_open"
		}
	default:
		p.err = fmt.Errorf("workload: the caller (pid %d) exited before it could be attested: %w", cred.Pid, err)
		return
	}
	procfd, err := unix.Open(procDir+"/"+strconv.Itoa(int(cred.Pid)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		p.err = fmt.Errorf("workload: the caller (pid %d) exited before it could be attested: %w", cred.Pid, err)
		return
	}
	p.procfd = procfd
	if err := p.aliveLocked(); err != nil {
		p.err = err
		return
	}
	st, err := p.statLocked()
	if err != nil {
		p.err = err
		return
	}
	p.start = st.start
	p.exe, _ = p.exeLocked() // unreadable (kernel thread, no permission): no path selector, now or later
	p.ns = p.namespacesLocked()
}

// namespacesLocked reads the caller's user and mount namespaces through
// the pinned directory. Reading them needs the same right as reading
// /proc/PID/exe (ptrace read access): what cannot be read stays unknown.
func (p *process) namespacesLocked() namespaces {
	return namespaces{user: nsAt(p.procfd, "ns/user"), mnt: nsAt(p.procfd, "ns/mnt")}
}

// nsAt identifies the namespace the link dir/name leads to.
func nsAt(dirfd int, name string) nsID {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, 0); err != nil {
		return nsID{}
	}
	return nsID{dev: st.Dev, ino: st.Ino}
}

// close releases the pinned descriptors; attestations after it fail.
func (p *process) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
	}
	if p.procfd >= 0 {
		unix.Close(p.procfd)
	}
}

// errGone says the pinned caller is no longer the process that connected.
var errGone = errors.New("the process that connected has exited; its PID may now name another process")

func (p *process) aliveLocked() error {
	if p.pidfd < 0 {
		return nil
	}
	// Signal 0 only checks: ESRCH once the process has exited. EPERM (an
	// agent not running as root, a caller of another user) means it lives.
	if err := unix.PidfdSendSignal(p.pidfd, 0, nil, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("workload: pid %d: %w (%v)", p.PID, errGone, err)
	}
	return nil
}

// procStat is what attestation needs from /proc/PID/stat.
type procStat struct {
	state byte
	start uint64 // field 22, clock ticks after boot
}

func (p *process) statLocked() (procStat, error) {
	b, err := p.readLocked("stat")
	if err != nil {
		return procStat{}, fmt.Errorf("workload: pid %d: %w (%v)", p.PID, errGone, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("workload: pid %d: %w", p.PID, err)
	}
	if st.state == 'Z' || st.state == 'X' {
		return procStat{}, fmt.Errorf("workload: pid %d: %w (state %c)", p.PID, errGone, st.state)
	}
	return st, nil
}

// parseStat parses /proc/PID/stat. The command name (field 2) is chosen by
// the process and may hold spaces and parentheses, so the fields are
// counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed /proc stat: too few fields")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat: start time %q", f[19])
	}
	return procStat{state: f[0][0], start: start}, nil
}

// procStatus is what attestation needs from /proc/PID/status.
type procStatus struct {
	euid, egid uint32
	groups     []string
}

// parseStatus parses the Uid, Gid and Groups lines of /proc/PID/status.
func parseStatus(b []byte) (procStatus, error) {
	var st procStatus
	var haveUID, haveGID bool
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "Uid", "Gid":
			if len(f) < 2 {
				return procStatus{}, fmt.Errorf("malformed /proc status: %s line", k)
			}
			n, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				return procStatus{}, fmt.Errorf("malformed /proc status: %s %q", k, f[1])
			}
			if k == "Uid" {
				st.euid, haveUID = uint32(n), true
			} else {
				st.egid, haveGID = uint32(n), true
			}
		case "Groups":
			for _, g := range f {
				if _, err := strconv.ParseUint(g, 10, 32); err == nil {
					st.groups = append(st.groups, g)
				}
			}
		}
	}
	if !haveUID || !haveGID {
		return procStatus{}, errors.New("malformed /proc status: no Uid or Gid line")
	}
	return st, nil
}

// exeLocked identifies the caller's executable through the pinned
// directory: the link's text and the device and inode it leads to.
func (p *process) exeLocked() (exeID, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(p.procfd, "exe", buf)
	if err != nil {
		return exeID{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(p.procfd, "exe", &st, 0); err != nil {
		return exeID{}, err
	}
	return exeID{path: string(buf[:n]), dev: st.Dev, ino: st.Ino}, nil
}

// readLocked reads a file of the pinned /proc/PID directory.
func (p *process) readLocked(name string) ([]byte, error) {
	fd, err := unix.Openat(p.procfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// openExeLocked opens the caller's executable through the pinned
// directory and checks it is the file identified at accept.
func (p *process) openExeLocked() (*os.File, error) {
	fd, err := unix.Openat(p.procfd, "exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "exe")
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Dev != p.exe.dev || st.Ino != p.exe.ino {
		f.Close()
		return nil, fmt.Errorf("workload: pid %d: the executable changed while it was hashed", p.PID)
	}
	return f, nil
}

// pinListener pins the caller of every connection as it is accepted, the
// earliest moment the agent can look, and keeps the connections within
// budget: one beyond it is closed at once.
type pinListener struct {
	net.Listener
	procDir string
	budget  *connBudget
}

func (l pinListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return c, nil // the handshake refuses it
		}
		p := pinConn(uc, l.procDir)
		if l.budget != nil && !l.budget.admit(p.UID, p.PID) {
			p.close()
			uc.Close()
			continue
		}
		return &pinnedConn{UnixConn: uc, proc: p, budget: l.budget}, nil
	}
}

// pinnedConn releases the pin, and its place in the budget, when the
// connection closes.
type pinnedConn struct {
	*net.UnixConn
	proc   *process
	budget *connBudget
	once   sync.Once
}

func (c *pinnedConn) Close() error {
	c.once.Do(func() {
		c.proc.close()
		if c.budget != nil {
			c.budget.release(c.proc.UID)
		}
	})
	return c.UnixConn.Close()
}
