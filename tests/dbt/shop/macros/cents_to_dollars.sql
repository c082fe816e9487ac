{% macro cents_to_dollars(column, scale=2) -%}
    round({{ column }} / 100, {{ scale }})
{%- endmacro %}
