// Command scanworkload is a workload for the supply-chain end-to-end test:
// it parses an Accept-Language header with golang.org/x/text/language
// (ParseAcceptLanguage is vulnerable before x/text v0.3.8, GO-2022-1059)
// and asks the Workload API for an X.509-SVID. go.mod pins the vulnerable
// x/text; go.patched.mod the fixed one.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/text/language"
)

func main() {
	tags, _, err := language.ParseAcceptLanguage("en-US,fr;q=0.8")
	if err != nil || len(tags) == 0 {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sv, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+os.Getenv("SPIFFE_ENDPOINT_SOCKET")))
	if err != nil {
		fmt.Println("refused:", err)
		os.Exit(1)
	}
	fmt.Println("svid:", sv.ID)
}
