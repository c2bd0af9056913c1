%{
/* placeholder: replaced by the real parser */
int yylex(void);
void yyerror(const char *s);
%}
%%
start: ;
%%
