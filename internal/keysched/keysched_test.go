package keysched

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	key := &Key{NotBefore: t0, NotAfter: t0.Add(60 * time.Hour)}
	next := &Key{NotBefore: t0.Add(30 * time.Hour), NotAfter: t0.Add(90 * time.Hour)}
	for _, tt := range []struct {
		name             string
		now              time.Duration
		active, prepared *Key
		want             Action
	}{
		{"no keys", 0, nil, nil, CreateActive},
		{"only prepared", 0, nil, next, PromotePrepared},
		{"fresh active", time.Hour, key, nil, None},
		{"just before half", 30*time.Hour - time.Second, key, nil, None},
		{"half", 30 * time.Hour, key, nil, CreatePrepared},
		{"prepared, before two thirds", 40*time.Hour - time.Second, key, next, None},
		{"prepared, two thirds", 40 * time.Hour, key, next, Switch},
		{"no successor, late", 59 * time.Hour, key, nil, CreatePrepared},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Next(t0.Add(tt.now), tt.active, tt.prepared); got != tt.want {
				t.Fatalf("Next = %v, want %v", got, tt.want)
			}
		})
	}
}
