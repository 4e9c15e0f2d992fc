// Command patched parses an Accept-Language header with a version of
// golang.org/x/text where ParseAcceptLanguage is fixed (v0.3.8).
package main

import (
	"fmt"
	"os"

	"golang.org/x/text/language"
)

func main() {
	tags, _, err := language.ParseAcceptLanguage(os.Getenv("ACCEPT_LANGUAGE") + "en-US,fr;q=0.8")
	fmt.Println(tags, err)
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		select {}
	}
}
