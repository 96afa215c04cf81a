"""Leader-only controllers: DNS hosts, proxy Services, CSR approval, and the webhooks."""
