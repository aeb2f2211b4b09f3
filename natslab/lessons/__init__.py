"""What lessons use to draw and measure: subject matcher, fan-out, stream and KV views, failover, topology view, security toolkit."""
