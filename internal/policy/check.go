package policy

// Check parses and compiles a policy document and returns the service it
// protects and its version: what is checked before a policy is stored,
// so that nothing stored fails to load.
func Check(src []byte) (service, version string, err error) {
	p, err := Parse(src)
	if err != nil {
		return "", "", err
	}
	if _, err := Compile(p); err != nil {
		return "", "", err
	}
	return p.Service.String(), p.Version, nil
}
