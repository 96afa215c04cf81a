"""ravend.certs: keys, CSRs, approval policy, on-disk store, rotation and TLS contexts.

Layers (each imports only those above it):
  keys, csr            pure: key generation, PEM, the three certificate kinds and their CSRs
  policy, rotation     pure: may a requester have a CSR approved; when to renew
  api, settings        pure: the CsrApi Protocol and its errors; CertSettings
  store, tls           file I/O (store) and ssl contexts (no network)
  manager, localca     CertManager (issue/store/rotate/publish); a throwaway CA + CsrApi
  kube_csr             CsrApi on the Kubernetes CSR API (through ravend.kube)
"""
