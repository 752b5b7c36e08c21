"""What saleflow shows: diagrams, reports, HTML pages, JSON and exports."""
