package workload

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Executable is the program a caller runs, as pinned at accept.
type Executable struct {
	PID  int32
	UID  uint32
	Path string
	// Dev, Ino, Mtime (ns) and Size identify the file's content: a
	// program's hash can be cached under them (a running executable
	// cannot be written: ETXTBSY).
	Dev, Ino uint64
	Mtime    int64
	Size     int64
	// Open opens the pinned executable through /proc/PID/exe and checks
	// it is the file pinned at accept; nothing is opened by path.
	Open func() (*os.File, error)
}

// Refusal says why an identity was withheld from a caller.
type Refusal struct {
	EntryID, SpiffeID string
	Reason            string
	DryRun            bool // only reported: the identity was not withheld
}

// Inspector looks at the executable of every caller about to get
// identities: the agent records it for the inventory and applies the
// scan gate. It returns the identities the caller may have, and why the
// others (and, in dry run, those it would have withheld) were refused.
type Inspector interface {
	Inspect(ctx context.Context, exe Executable, ids []Identity) ([]Identity, []Refusal)
}

// SetInspector makes the server consult in before it hands identities out.
func (s *Server) SetInspector(in Inspector) { s.inspector = in }

// executable describes the caller's pinned executable.
func (p *process) executable() (Executable, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return Executable{}, errClosed
	}
	if p.procfd < 0 {
		return Executable{}, fmt.Errorf("workload: pid %d: %w", p.PID, errGone)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(p.procfd, "exe", &st, 0); err != nil {
		return Executable{}, fmt.Errorf("workload: pid %d: executable: %w", p.PID, err)
	}
	if st.Dev != p.exe.dev || st.Ino != p.exe.ino {
		return Executable{}, fmt.Errorf("workload: pid %d: %w: it runs another executable than at accept", p.PID, errChanged)
	}
	return Executable{PID: p.PID, UID: p.UID, Path: p.exe.path, Dev: st.Dev, Ino: st.Ino,
		Mtime: st.Mtim.Nano(), Size: st.Size,
		Open: func() (*os.File, error) {
			p.mu.RLock()
			defer p.mu.RUnlock()
			if p.closed {
				return nil, fmt.Errorf("workload: pid %d: the connection is closed", p.PID)
			}
			return p.openExeLocked()
		}}, nil
}

// inspect runs the inspector on the identities a caller matched. A caller
// left with none because the gate withheld them is refused here, with the
// gate's reason in the log and the audit entry.
func (s *Server) inspect(ctx context.Context, p *process, method string, ids []Identity) ([]Identity, error) {
	if s.inspector == nil || len(ids) == 0 {
		return ids, nil
	}
	exe, err := p.executable()
	if errors.Is(err, errClosed) {
		return nil, status.Error(codes.Canceled, "the connection is closed")
	}
	if err != nil {
		s.log.Warn("workload refused: the caller's executable could not be read", "pid", p.PID, "err", err)
		s.audit.refused(ctx, p, method, err.Error())
		return nil, status.Error(codes.PermissionDenied, "the calling process could not be attested")
	}
	if !p.inUserNS(s.attestor.userNamespace()) {
		// In a user namespace of its own a process may point its
		// /proc/PID/exe at any file it can open (prctl PR_SET_MM_MAP):
		// what it shows is not what it runs. Not inspected: the inventory
		// misses it and a gated entry is refused for want of a verdict.
		exe.Open = func() (*os.File, error) {
			return nil, errors.New("workload: the caller runs in another user namespace than the agent's, where its /proc/PID/exe may name any file; its executable is not inspected")
		}
	}
	allowed, refusals := s.inspector.Inspect(ctx, exe, ids)
	for _, r := range refusals {
		if r.DryRun {
			s.log.Warn("scan gate (dry run): would refuse the SVID", "pid", p.PID, "exe", exe.Path, "spiffe_id", r.SpiffeID, "entry_id", r.EntryID, "reason", r.Reason)
		} else {
			s.log.Warn("scan gate: SVID refused", "pid", p.PID, "exe", exe.Path, "spiffe_id", r.SpiffeID, "entry_id", r.EntryID, "reason", r.Reason)
		}
		s.audit.gate(p, method, r)
	}
	if len(allowed) == 0 && len(refusals) > 0 {
		return nil, status.Error(codes.PermissionDenied, "refused by the scan gate: the executable must be patched (the agent's log says why)")
	}
	return allowed, nil
}

// inUserNS reports whether the caller was, at accept, in the user namespace
// own (unknown on either side: not).
func (p *process) inUserNS(own nsID) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ns.user.known() && own.known() && p.ns.user == own
}
