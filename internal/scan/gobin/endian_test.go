package gobin

import "encoding/binary"

func littleEndian() binary.ByteOrder { return binary.LittleEndian }
