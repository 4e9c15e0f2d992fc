package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/sdk/kms"
)

// getCustomer reads a record through the customers service, over mTLS as
// the demo client (which customers' policy allows).
func getCustomer(ctx context.Context, sys *System, id string) (Customer, error) {
	svid, err := fetchOwnSVID(ctx, sys)
	if err != nil {
		return Customer{}, err
	}
	pem, err := os.ReadFile(sys.BundleFile)
	if err != nil {
		return Customer{}, err
	}
	bundle, err := x509bundle.Parse(TrustDomain, pem)
	if err != nil {
		return Customer{}, err
	}
	customers := spiffeid.RequireFromPath(TrustDomain, "/customers")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(customers))}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+sys.Services.Customers+"/customers/"+id, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return Customer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Customer{}, fmt.Errorf("customers answered %d", resp.StatusCode)
	}
	var c Customer
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// attackStolenDatabase copies the customers database, looks for the card
// number in it, then tries to have the key store decrypt the field with an
// identity the key-use policy does not name; finally the key rotates and
// the record still reads.
func attackStolenDatabase(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	before, err := getCustomer(ctx, sys, "42")
	if err != nil {
		return Outcome{}, fmt.Errorf("the customers service does not serve record 42: %w", err)
	}
	db, err := os.ReadFile(sys.Services.CustomersDB)
	if err != nil {
		return Outcome{}, err
	}
	if wal, err := os.ReadFile(sys.Services.CustomersDB + "-wal"); err == nil {
		db = append(db, wal...)
	}
	for _, secret := range []string{"4111 1111 1111 1111", "alice@example.com"} {
		if bytes.Contains(db, []byte(secret)) {
			return Outcome{}, fmt.Errorf("%q is in the stolen database file in the clear", secret)
		}
	}
	// Find a wrapped data key in the file and ask the key store to open it,
	// with the only identity the thief has: the demo client's SVID.
	i := bytes.Index(db, []byte("rke\x01"))
	if i < 0 || len(db) < i+6 {
		return Outcome{}, errors.New("no encrypted field found in the customers database")
	}
	ct := db[i:]
	wrapped, _, err := kms.Split(ct)
	if err != nil {
		return Outcome{}, err
	}
	svid, err := fetchOwnSVID(ctx, sys)
	if err != nil {
		return Outcome{}, err
	}
	thief := mtlsClient(sys, svid.Certificates, svid.PrivateKey)
	err = thief.Do(ctx, http.MethodPost, "/v1/kms/keys/"+customersKey+"/decrypt", api.KMSRequest{Ciphertext: wrapped}, nil)
	var p *api.Problem
	if !errors.As(err, &p) || p.Status != http.StatusForbidden {
		return Outcome{}, fmt.Errorf("the key store answered the thief: %v", err)
	}
	// Rotation: a new version for new data; the record still reads.
	var key api.KMSKey
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/kms/keys/"+customersKey+"/rotate", nil, &key); err != nil {
		return Outcome{}, err
	}
	after, err := getCustomer(ctx, sys, "42")
	if err != nil || after.Card != before.Card || after.Email != before.Email {
		return Outcome{}, fmt.Errorf("record 42 after rotating %s to version %d: %+v %v", customersKey, key.Latest, after, err)
	}
	out := Outcome{Stopped: true, Prevent: fmt.Sprintf("the email and card of customer 42 are encrypted field by field (sdk/kms, %s v%d, bound to their row and column); "+
		"the stolen file holds only ciphertext, and the key store refused to unwrap its data key for %s (%s). "+
		"The key then rotated to v%d and customers still read the record (%s, card %s)",
		customersKey, before.KeyVersions["card"], svid.ID, p.Detail, key.Latest, after.Email, after.Card)}
	a, err := waitAlert(ctx, sys, "key-use-denied", start)
	if err != nil {
		return Outcome{}, err
	}
	out.Detect = alertLine(a)
	return out, nil
}
