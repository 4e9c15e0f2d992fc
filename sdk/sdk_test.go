package sdk

import (
	"context"
	"strings"
	"testing"
)

// A spool with nowhere to deliver would fill the disk silently: refused
// before anything starts.
func TestAuditSpoolNeedsServer(t *testing.T) {
	t.Setenv("RAMPART_SERVER", "")
	_, err := New(context.Background(), WithSocket("/nonexistent/socket"), WithAuditSpool(t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "WithAuditSpool needs WithServer") {
		t.Fatalf("got %v", err)
	}
}
