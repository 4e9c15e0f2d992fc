// Package yamlfields reads YAML mappings strictly, for the file formats
// users write by hand (policies, detection rules): unknown and repeated keys
// are errors that name the line, so a typo never silently drops a setting.
package yamlfields
