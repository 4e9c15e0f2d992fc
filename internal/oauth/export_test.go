package oauth

// PasswordChecks returns how many argon2id runs p's logins have made.
func PasswordChecks(p *Provider) int64 { return p.hashing.runs.Load() }

// HoldHashing takes every hashing slot and queue place, as a flood of
// logins would, until release is called.
func HoldHashing(p *Provider) (release func()) {
	g := p.hashing
	for range cap(g.slots) {
		g.slots <- struct{}{}
	}
	g.waiting.Add(g.queue)
	return func() {
		g.waiting.Add(-g.queue)
		for range cap(g.slots) {
			<-g.slots
		}
	}
}

// DPoPNonce is the DPoP nonce p hands out now.
func DPoPNonce(p *Provider) string { return p.dpopNonce() }
