//go:build !linux

package audit

import "testing"

const runtimeCanPunch = false

func allocated(*testing.T, string) int64 { return 0 }
