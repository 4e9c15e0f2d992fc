package server

import "github.com/rampartsec/rampart/internal/policy"

// checkPolicy parses and compiles a policy document and returns the service
// it protects and its version. Nothing that fails here is stored.
func checkPolicy(src []byte) (service, version string, err error) {
	p, err := policy.Parse(src)
	if err != nil {
		return "", "", err
	}
	if _, err := policy.Compile(p); err != nil {
		return "", "", err
	}
	return p.Service.String(), p.Version, nil
}
