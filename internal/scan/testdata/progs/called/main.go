// Command called parses an Accept-Language header with a version of
// golang.org/x/text whose ParseAcceptLanguage is vulnerable (GO-2022-1059).
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
