package kms_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log"

	"github.com/rampartsec/rampart/sdk"
	"github.com/rampartsec/rampart/sdk/kms"
)

// Fields are encrypted in-process under a data key of a named key from the
// server's key store; the server decides, by its key-use policy, whether
// this service may, and audits each data key it hands out. This example
// needs a server and an agent, so it is compiled, not run.
func ExampleClient_Encrypt() {
	ctx := context.Background()
	src, err := sdk.New(ctx) // this service's SVID, from the local agent
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	keys, err := kms.New(src, kms.WithServer("rampart.internal:8443"))
	if err != nil {
		log.Fatal(err)
	}
	// The associated data binds the ciphertext to its record: moved to
	// another customer's row, it no longer decrypts.
	ct, err := keys.Encrypt(ctx, "customers-pii", []byte("4111 1111 1111 1111"), []byte("customers/42/card"))
	if err != nil {
		log.Fatal(err)
	}
	card, err := keys.Decrypt(ctx, "customers-pii", ct, []byte("customers/42/card"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", card)
}

// KeyOf reads which key and version a stored ciphertext needs, without a
// server: to find the records still under an old version after a rotation.
func ExampleKeyOf() {
	// An envelope from testdata/vectors.json.
	ct, _ := hex.DecodeString("726b6501004f726b64010a6f72646572732d7069690000000372616d706172742d646b2d3160926f19a4e59a09766299f7ef76dd3c4349229d13117076450ef19a0b357724d28344df471a13509e307612babb2f7b72616d706172742d656e7631a2157668caf3f4a43ee1ae4972561ac26d4fcaff1b5376276b28f05985fe87a343168b")
	name, version, err := kms.KeyOf(ct)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(name, version)
	if _, _, err := kms.KeyOf([]byte("not an envelope")); err != nil {
		fmt.Println(err)
	}
	// Output:
	// orders-pii 3
	// kms: not a Rampart envelope ciphertext
}
