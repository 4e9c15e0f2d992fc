package dpop

import (
	"bytes"
	"encoding/json"
	"errors"
)

// jsonStrict decodes one JSON object; duplicate or unknown members are
// tolerated as RFC 7519 allows, trailing data is not.
func jsonStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the claims object")
	}
	return nil
}
