// Command inlined calls lib.Small, which the compiler inlines: its name is
// then only in main.main's inline tree, not in the function table.
package main

import (
	"fmt"
	"os"

	"example.com/inlined/lib"
)

func main() {
	fmt.Println(lib.Small(len(os.Args)))
}
