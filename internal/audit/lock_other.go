//go:build !unix

package audit

import "os"

// flock is a no-op where the platform has no flock(2): one writer per
// directory is then the operator's to ensure.
func flock(*os.File) error { return nil }
