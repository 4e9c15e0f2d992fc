package workload

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

// Listen creates the Workload API socket at path for an agent running as
// uid, replacing a stale socket of its own. The socket gets mode 0666: any
// local process may ask, and attestation decides what it gets. What keeps
// another local user from putting a fake Workload API in its place is the
// directory, so Listen creates it (0755) if it is missing and refuses to
// listen unless (safedir.Make)
//
//   - the socket's directory is owned by uid and not writable by group or
//     others, and
//   - every directory above it is owned by root or uid, and writable by
//     group or others only with the sticky bit (as /tmp: there, nobody
//     but its owner can rename or remove the agent's directory).
//
// Symbolic links in path are resolved first and the socket is created at
// the resolved place, so a link cannot redirect it later.
func Listen(path string, uid int) (net.Listener, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("workload: socket path %q: %w", path, err)
	}
	dir, err := safedir.Make(filepath.Dir(abs), "the Workload API socket's directory", uid, 0o755)
	if err != nil {
		return nil, fmt.Errorf("workload: %w (default socket %s)", err, filepath.Join(endpoint.SystemDir, endpoint.SocketName))
	}
	sock := filepath.Join(dir, filepath.Base(abs))
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("workload: %s exists and is not a socket; refusing to replace it", sock)
		}
		os.Remove(sock)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("workload: listen %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("workload: %w", err)
	}
	return ln, nil
}
