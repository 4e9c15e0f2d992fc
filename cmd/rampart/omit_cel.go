//go:build rampart_omit_cel

package main

// The server validates the conditions of the policies it is given, and
// proxies enforce them: rampart is never built without CEL (that tag is
// for services using the SDK; see internal/policy). This fails the build.
var _ int = "rampart cannot be built with -tags rampart_omit_cel"
