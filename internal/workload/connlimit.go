package workload

import (
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The socket is open to every local process, and each connection costs
// the agent three descriptors while it lasts (the socket, the caller's
// pidfd and its /proc directory). Without a bound, one local user opening
// connections and holding them would take every descriptor the agent has,
// and with them every workload's SVID renewals and the agent's own
// connection to the server (the class of the proxy's connection flood,
// issue 26-27 follow-up). So the agent holds a bounded number of
// connections, and one uid at most an eighth of them: an unprivileged
// user has one uid (a user namespace maps her to it too), so she cannot
// shut out the others.

// connBudget bounds the Workload API's connections, in all and per uid
// (from SO_PEERCRED).
type connBudget struct {
	max, perUID int
	log         *slog.Logger
	now         func() time.Time

	mu     sync.Mutex
	total  int
	byUID  map[uint32]int
	warned map[uint32]refusalLog // last warning per uid
}

// refusalLog rate-limits the warnings about one uid.
type refusalLog struct {
	at         time.Time
	suppressed int
}

// descriptors per connection, and those kept back for the agent itself
// (its server connection, spool, metrics, logs, the runtime).
const (
	fdsPerConn      = 3
	agentReserveFDs = 256
)

// defaultConnBudget derives the bounds from the open-file limit nofile:
// three descriptors a connection in what is left after agentReserveFDs
// (a quarter of the limit, if that leaves less), between 16 and 16,384
// connections (each also costs gRPC's buffers); a uid gets an eighth of
// them, between 16 and 1,024.
func defaultConnBudget(nofile uint64) (total, perUID int) {
	n := int(min(nofile, 1<<24))
	total = max((n-agentReserveFDs)/fdsPerConn, n/4/fdsPerConn)
	total = min(max(total, 16), 16384)
	perUID = min(max(total/8, 16), 1024, total)
	return total, perUID
}

func newConnBudget(log *slog.Logger) *connBudget {
	nofile := uint64(1024)
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		nofile = rl.Cur
	}
	total, perUID := defaultConnBudget(nofile)
	return &connBudget{max: total, perUID: perUID, log: log, now: time.Now, byUID: map[uint32]int{}, warned: map[uint32]refusalLog{}}
}

// admit counts a connection from uid in, or says it is one too many.
func (b *connBudget) admit(uid uint32, pid int32) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total < b.max && b.byUID[uid] < b.perUID {
		b.total++
		b.byUID[uid]++
		return true
	}
	// One warning per uid per refusalInterval, with the count since.
	w := b.warned[uid]
	now := b.now()
	if !w.at.IsZero() && now.Sub(w.at) < refusalInterval {
		w.suppressed++
		b.warned[uid] = w
		return false
	}
	if len(b.warned) > 10000 {
		clear(b.warned)
	}
	b.warned[uid] = refusalLog{at: now}
	b.log.Warn("workload: connection refused: too many open Workload API connections",
		"uid", uid, "pid", pid, "uid_conns", b.byUID[uid], "max_per_uid", b.perUID, "conns", b.total, "max", b.max, "refused_since_last_warning", w.suppressed)
	return false
}

func (b *connBudget) release(uid uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total--
	if b.byUID[uid]--; b.byUID[uid] <= 0 {
		delete(b.byUID, uid)
	}
}
