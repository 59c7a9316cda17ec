"""Every renderer: JSON, terminal tables, JUnit, PNG/SVG and HTML, one module per view."""
