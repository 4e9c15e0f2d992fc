//go:build linux

package audit

import (
	"os"
	"syscall"
	"testing"
)

const runtimeCanPunch = true

// allocated is how many bytes of disk a file occupies.
func allocated(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
