// Package deploy is what a deployment is made of: the project file that
// names a federation's coordinators, sites and admins; the certificate
// authority and the certificates it signs (the certificate's CN is the
// name, its OU the role); the startup kits that [Provision] writes, one
// folder per coordinator, site and admin; the strict YAML config files those
// kits hold ([LoadSiteConfig], [LoadCoordinatorConfig], [LoadAdminConfig]);
// and the mutual-TLS configurations built from them ([TLSFiles]), whose
// handshake failures say in words which certificate is wrong and what to do.
package deploy
