// Command notcalled uses golang.org/x/text/language at a vulnerable
// version but never the vulnerable functions (GO-2022-1059).
package main

import (
	"fmt"
	"os"

	"golang.org/x/text/language"
)

func main() {
	fmt.Println(language.Make(os.Getenv("LANG_TAG") + "en").String())
}
