// Package lib has a function small enough to be inlined.
package lib

// Small is inlined into its callers.
func Small(n int) int { return n*2 + 1 }
