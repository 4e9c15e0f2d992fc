// Package verdict is the part of the inventory an agent runs: the report
// it makes of an executable (FromGobin), the limits on a report, and the
// scan gate's decision over the server's verdict (Policy.Decide). It
// depends on nothing of the server or the store, so the agent does not
// either (see internal/deptest).
package verdict
