package objstore

import (
	"context"
	"net/http"
)

// Delete removes the object under key; a missing object is not an error
// (S3 answers 204 either way).
func (b *Bucket) Delete(ctx context.Context, key string) error {
	resp, err := b.do(ctx, http.MethodDelete, b.key(key), nil, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusNotFound:
		return nil
	}
	return b.failure(resp, "delete "+key)
}
